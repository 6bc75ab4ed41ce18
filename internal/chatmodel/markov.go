package chatmodel

import (
	_ "embed"
	"math"
	"math/rand/v2"
	"strings"
	"unicode/utf8"
)

// corpus is the text the chain learns from; see its first lines for its source.
//
//go:embed corpus.txt
var corpus string

// chain is a trigram Markov chain over the corpus's tokens: for each pair of tokens, the tokens
// that follow that pair in the corpus, with how often. A token keeps the space that came before
// it in the corpus (" Alice", ",", " 'Oh" is " '" and "Oh"), so an answer is its tokens put
// together: quotation marks open and close where the corpus has them, and two words are never
// written without a space between them (in the corpus they would have been one word), so the
// model's count of its own answer is the number of tokens it wrote.
type chain struct {
	tokens []string
	next   map[[2]string][]follower
	// starts are the indices of the tokens that begin a sentence.
	starts []int
	// topics maps a lowercased word of at least four letters to the starts of the sentences that
	// hold it.
	topics map[string][]int
}

type follower struct {
	tok string
	n   int
}

// train builds the chain from text: lines starting with "#" at its top, chapter headings and
// lines of asterisks are left out. The corpus is read as a ring (its end runs on into its start),
// so every pair of tokens has a follower.
func train(text string) *chain {
	var body []string
	header := true
	for line := range strings.Lines(text) {
		if header && strings.HasPrefix(line, "#") {
			continue
		}
		header = false
		t := strings.TrimSpace(line)
		if strings.HasPrefix(t, "CHAPTER ") || (t != "" && strings.Trim(t, "* ") == "") {
			continue
		}
		body = append(body, line)
	}
	toks := split(strings.Join(body, ""), true)
	toks[0] = " " + toks[0] // where the ring closes
	c := &chain{tokens: toks, next: map[[2]string][]follower{}, topics: map[string][]int{}}
	n := len(toks)
	sentence := 0
	for i := range toks {
		key := [2]string{toks[i], toks[(i+1)%n]}
		c.next[key] = addFollower(c.next[key], toks[(i+2)%n])
		if i == 0 || startsSentence(toks, i) {
			sentence = i
			c.starts = append(c.starts, i)
		}
		if w := strings.ToLower(bare(toks[i])); utf8.RuneCountInString(w) >= 4 && isWord(w) {
			if s := c.topics[w]; len(s) == 0 || s[len(s)-1] != sentence {
				c.topics[w] = append(s, sentence)
			}
		}
	}
	return c
}

func addFollower(fs []follower, tok string) []follower {
	for i := range fs {
		if fs[i].tok == tok {
			fs[i].n++
			return fs
		}
	}
	return append(fs, follower{tok, 1})
}

// bare is a token without its space.
func bare(tok string) string { return strings.TrimPrefix(tok, " ") }

func endsSentence(tok string) bool {
	tok = bare(tok)
	return tok == "." || tok == "!" || tok == "?"
}

// startsSentence says whether toks[i] begins a sentence: a capital or an opening quotation mark
// and a capital, after the end of a sentence (and its closing quotation mark, if any).
func startsSentence(toks []string, i int) bool {
	n := len(toks)
	capital := func(tok string) bool {
		r, _ := utf8.DecodeRuneInString(bare(tok))
		return r >= 'A' && r <= 'Z'
	}
	if !capital(toks[i]) && !(bare(toks[i]) == "'" && capital(toks[(i+1)%n])) {
		return false
	}
	prev := toks[(i+n-1)%n]
	return endsSentence(prev) || (prev == "'" && endsSentence(toks[(i+n-2)%n]))
}

// generation is one answer: its tokens as the pieces of its text, and why it ended.
type generation struct {
	// pieces are the tokens as written, the space before each but the first included: put
	// together they are the answer's text, and each is one token.
	pieces []string
	// finish is "stop" when the answer ended by itself, "length" when it reached the limit.
	finish string
}

func (g generation) text() string { return strings.Join(g.pieces, "") }

// generate writes an answer of at most maxTokens tokens. It starts at a sentence of the corpus
// that holds one of the topic words (the last one the corpus knows; any sentence if none),
// follows the chain, and stops at the end of a sentence once it has written a length drawn
// between 12 and 48 tokens. A temperature of 0 always takes the most frequent follower; higher
// temperatures flatten the odds (each follower weighs count^(1/temperature)). All choices come
// from r, so the same r gives the same answer, and a lower maxTokens gives a prefix of it.
func (c *chain) generate(r *rand.Rand, temperature float64, topic []string, maxTokens int) generation {
	target := 12 + r.IntN(37)
	starts := c.starts
	for i := len(topic) - 1; i >= 0; i-- {
		if s := c.topics[strings.ToLower(topic[i])]; len(s) > 0 {
			starts = s
			break
		}
	}
	s := starts[r.IntN(len(starts))]
	a, b := c.tokens[s], c.tokens[(s+1)%len(c.tokens)]
	toks := []string{bare(a), b}
	finish := "stop"
	// Write until the answer ends by itself or has one token more than allowed.
	for len(toks) <= maxTokens {
		if len(toks) >= target && endsSentence(toks[len(toks)-1]) {
			// A quotation that the sentence closes ends with it.
			if nxt := c.pick(r, temperature, a, b); nxt == "'" {
				toks = append(toks, nxt)
			}
			break
		}
		nxt := c.pick(r, temperature, a, b)
		toks = append(toks, nxt)
		a, b = b, nxt
	}
	if len(toks) > maxTokens {
		toks, finish = toks[:maxTokens], "length"
	}
	return generation{pieces: toks, finish: finish}
}

// pick draws the token that follows a, b.
func (c *chain) pick(r *rand.Rand, temperature float64, a, b string) string {
	fs := c.next[[2]string{a, b}]
	switch {
	case len(fs) == 1:
		return fs[0].tok
	case temperature == 0:
		best := fs[0]
		for _, f := range fs[1:] {
			if f.n > best.n {
				best = f
			}
		}
		return best.tok
	case temperature == 1:
		total := 0
		for _, f := range fs {
			total += f.n
		}
		x := r.IntN(total)
		for _, f := range fs {
			if x -= f.n; x < 0 {
				return f.tok
			}
		}
	}
	weights := make([]float64, len(fs))
	total := 0.0
	for i, f := range fs {
		weights[i] = math.Pow(float64(f.n), 1/temperature)
		total += weights[i]
	}
	x := r.Float64() * total
	for i, w := range weights {
		if x -= w; x < 0 {
			return fs[i].tok
		}
	}
	return fs[len(fs)-1].tok
}
