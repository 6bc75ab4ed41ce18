package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// progress prints one line saying what runs now, how far the run is and how long it should still
// take. On a terminal the line is rewritten in place; elsewhere each step is a line of its own.
type progress struct {
	mu      sync.Mutex
	w       io.Writer
	tty     bool
	began   time.Time // start of the run
	first   time.Time // start of the first planned step, from which the pace is judged
	planned float64   // expected seconds of all steps
	done    float64   // expected seconds of the steps begun
	lastLen int
}

func newProgress(w io.Writer) *progress {
	if w == nil {
		w = io.Discard
	}
	tty := false
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			tty = true
		}
	}
	return &progress{w: w, tty: tty, began: time.Now()}
}

// plan adds expected seconds of work to come.
func (p *progress) plan(seconds float64) {
	p.mu.Lock()
	p.planned += seconds
	p.mu.Unlock()
}

// step shows that a step expected to take seconds begins.
func (p *progress) step(label string, seconds float64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.first.IsZero() {
		p.first = time.Now()
	}
	left := "?"
	if p.done > 0 && p.planned > p.done {
		pace := time.Since(p.first).Seconds() / p.done // real seconds per expected second so far
		left = time.Duration(pace * (p.planned - p.done) * float64(time.Second)).Round(time.Second).String()
	}
	p.done += seconds
	elapsed := time.Since(p.began)
	pct := 0.0
	if p.planned > 0 {
		pct = min(100, 100*p.done/p.planned)
	}
	p.show(fmt.Sprintf("[%3.0f%%] %s | %s elapsed, about %s left", pct, label, elapsed.Round(time.Second), left))
}

// say shows a line outside the plan (preparation).
func (p *progress) say(msg string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.show(msg)
}

// finish ends the progress line.
func (p *progress) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.show(fmt.Sprintf("done in %s", time.Since(p.began).Round(time.Second)))
	if p.tty {
		fmt.Fprintln(p.w)
	}
}

func (p *progress) show(line string) {
	if !p.tty {
		fmt.Fprintln(p.w, line)
		return
	}
	pad := ""
	if n := p.lastLen - len(line); n > 0 {
		pad = strings.Repeat(" ", n)
	}
	fmt.Fprint(p.w, "\r"+line+pad)
	p.lastLen = len(line)
}
