package chatmodel

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// The model's tokens: a word is a maximal run of letters, digits and combining marks; every other
// character that is not white space is a token by itself (so "don't" is three tokens, "Rabbit-Hole"
// three, "--" two). White space separates tokens and is not one.

// MessageOverhead is what each message of a chat (and each input message of a response) adds to
// the prompt's tokens besides its content: one token that opens it and names its role, one that
// closes it. A chat's prompt_tokens is the sum over its messages of Count(content) plus
// MessageOverhead; a legacy completion's is Count(prompt); an embedding's, Count(input).
const MessageOverhead = 2

// Count returns the number of the model's tokens in text: what its usage reports for that text.
func Count(text string) int {
	n := 0
	inWord := false
	for _, r := range text {
		switch {
		case isWordRune(r):
			if !inWord {
				n++
				inWord = true
			}
		case unicode.IsSpace(r):
			inWord = false
		default:
			n++
			inWord = false
		}
	}
	return n
}

// tokenize splits text into the model's tokens.
func tokenize(text string) []string { return split(text, false) }

// split splits text into tokens; with spaced, a token that white space comes before carries one
// space at its start (" Alice", "'" after a word, " '" before one).
func split(text string, spaced bool) []string {
	var toks []string
	start := -1    // start of the word being read, or -1
	space := false // white space since the last token
	add := func(tok string) {
		if spaced && space && len(toks) > 0 {
			tok = " " + tok
		}
		toks = append(toks, tok)
		space = false
	}
	for i := 0; i < len(text); {
		r, size := utf8.DecodeRuneInString(text[i:]) // an invalid byte is a RuneError of size 1
		if isWordRune(r) {
			if start < 0 {
				start = i
			}
			i += size
			continue
		}
		if start >= 0 {
			add(text[start:i])
			start = -1
		}
		if unicode.IsSpace(r) {
			space = true
		} else {
			add(text[i : i+size])
		}
		i += size
	}
	if start >= 0 {
		add(text[start:])
	}
	return toks
}

func isWordRune(r rune) bool {
	return unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.IsMark(r)
}

// isWord says whether a token (spaced or not) is a word.
func isWord(tok string) bool {
	r, _ := utf8.DecodeRuneInString(strings.TrimPrefix(tok, " "))
	return isWordRune(r)
}
