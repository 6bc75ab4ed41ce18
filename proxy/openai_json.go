package proxy

// jsonTop walks the top level of a JSON object given to it in pieces, without buffering it: it
// finds each member's key and where its value lies, and keeps a copy of the values of up to two
// wanted members (bounded). The request of a language-model call and its answers are read with
// it (openai.go, openai_answer.go): the few members the gateway needs are found without decoding
// the rest (a prompt, an answer's text, a list of embeddings), and an answer that streams through
// is read as it passes, without keeping it.
//
// It checks the object's structure (members, strings, nesting), not every value's grammar: what
// it hands on is decoded with encoding/json, and what it skips is the model's to judge.
type jsonTop struct {
	state   uint8
	depth   int  // nesting within a composite value
	inStr   bool // within a string of a composite value
	esc     bool // the byte before was a backslash, within a string
	comma   bool // a ',' was read since the last member: a key must follow
	pos     int  // bytes read so far
	key     [24]byte
	keyLen  int // may exceed len(key): the key is then longer than any wanted one
	bad     bool
	closeAt int // the position of the object's closing brace, once read

	// record, when set, keeps every top-level member's span in members (for a whole buffer).
	record  bool
	members []jsonMember

	// want names up to two members whose values are copied into got (each up to max bytes;
	// a longer value is marked overflowed). The last occurrence of a member wins.
	want     [2]string
	got      [2][]byte
	found    [2]bool
	overflow [2]bool
	max      int
	capture  int // index into want of the value being read, or -1
	capFrom  int // where the value being captured starts within the current piece
}

// jsonMember is where one top-level member lies, as positions in what was given to jsonTop:
// the key's opening quote, the byte after its closing quote, and the value [valStart, valEnd).
type jsonMember struct {
	keyStart, keyEnd, valStart, valEnd int
}

// key is the member's key as written (its escapes not decoded), from data, the whole buffer the
// positions refer to.
func (m jsonMember) key(data []byte) []byte { return data[m.keyStart+1 : m.keyEnd-1] }

func (m jsonMember) value(data []byte) []byte { return data[m.valStart:m.valEnd] }

const (
	jsBegin       = iota // before the object
	jsKey                // expecting a key, or the end of the object
	jsInKey              // within a key
	jsColon              // after a key
	jsValue              // expecting a value
	jsInString           // within a string value
	jsInComposite        // within an object or array value
	jsInScalar           // within a number, true, false or null
	jsAfterValue         // after a value: ',' or '}'
	jsDone               // after the object: only whitespace may follow
)

// reset readies t for a new object, keeping its buffers.
func (t *jsonTop) reset() {
	*t = jsonTop{record: t.record, members: t.members[:0], want: t.want, max: t.max,
		got: [2][]byte{t.got[0][:0], t.got[1][:0]}, capture: -1}
}

func isJSONSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// feed reads the next piece of the object.
func (t *jsonTop) feed(b []byte) {
	if t.bad {
		return
	}
	base := t.pos
	t.capFrom = 0
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch t.state {
		case jsBegin:
			switch {
			case isJSONSpace(c):
			case c == '{':
				t.state = jsKey
			default:
				t.fail()
				return
			}
		case jsKey:
			switch {
			case isJSONSpace(c):
			case c == '"':
				t.state, t.keyLen, t.comma = jsInKey, 0, false
				if t.record {
					t.members = append(t.members, jsonMember{keyStart: base + i})
				}
			case c == '}' && !t.comma:
				t.state, t.closeAt = jsDone, base+i
			default:
				t.fail()
				return
			}
		case jsInKey:
			switch {
			case t.esc:
				t.esc = false
			case c == '\\':
				t.esc = true
			case c == '"':
				t.state = jsColon
				if t.record {
					t.members[len(t.members)-1].keyEnd = base + i + 1
				}
				continue
			case c < 0x20:
				t.fail()
				return
			}
			if t.keyLen < len(t.key) {
				t.key[t.keyLen] = c
			}
			t.keyLen++
		case jsColon:
			switch {
			case isJSONSpace(c):
			case c == ':':
				t.state = jsValue
			default:
				t.fail()
				return
			}
		case jsValue:
			if isJSONSpace(c) {
				continue
			}
			if t.record {
				t.members[len(t.members)-1].valStart = base + i
			}
			t.startCapture(i)
			switch {
			case c == '"':
				t.state = jsInString
			case c == '{' || c == '[':
				t.state, t.depth, t.inStr = jsInComposite, 1, false
			case c == '-' || c >= '0' && c <= '9' || c == 't' || c == 'f' || c == 'n':
				t.state = jsInScalar
			default:
				t.fail()
				return
			}
		case jsInString:
			switch {
			case t.esc:
				t.esc = false
			case c == '\\':
				t.esc = true
			case c == '"':
				t.endValue(b, base, i+1)
			case c < 0x20:
				t.fail()
				return
			}
		case jsInComposite:
			switch {
			case t.inStr && t.esc:
				t.esc = false
			case t.inStr && c == '\\':
				t.esc = true
			case t.inStr && c == '"':
				t.inStr = false
			case t.inStr && c < 0x20:
				t.fail()
				return
			case t.inStr:
			case c == '"':
				t.inStr = true
			case c == '{' || c == '[':
				t.depth++
			case c == '}' || c == ']':
				if t.depth--; t.depth == 0 {
					t.endValue(b, base, i+1)
				}
			}
		case jsInScalar:
			if isJSONSpace(c) || c == ',' || c == '}' {
				t.endValue(b, base, i)
				i-- // the byte ends the scalar and is read again after it
			} else if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '+' || c == '.' || c == 'E') {
				t.fail()
				return
			}
		case jsAfterValue:
			switch {
			case isJSONSpace(c):
			case c == ',':
				t.state, t.comma = jsKey, true
			case c == '}':
				t.state, t.closeAt = jsDone, base+i
			default:
				t.fail()
				return
			}
		case jsDone:
			if !isJSONSpace(c) {
				t.fail()
				return
			}
		}
	}
	if t.capture >= 0 { // the value goes on in the next piece
		t.keep(b[t.capFrom:])
	}
	t.pos = base + len(b)
}

// whole reports whether what was fed is one complete JSON object (as far as jsonTop checks).
func (t *jsonTop) whole() bool { return !t.bad && t.state == jsDone }

func (t *jsonTop) fail() {
	t.bad, t.capture = true, -1
}

// startCapture begins copying the value that starts at b[i] when its key is wanted.
func (t *jsonTop) startCapture(i int) {
	t.capture = -1
	if t.keyLen > len(t.key) {
		return
	}
	k := t.key[:t.keyLen]
	for w, name := range t.want {
		if name != "" && string(k) == name {
			t.capture, t.capFrom = w, i
			t.got[w], t.found[w], t.overflow[w] = t.got[w][:0], true, false
			return
		}
	}
}

// endValue ends the value that ends before b[end] (a position in this piece).
func (t *jsonTop) endValue(b []byte, base, end int) {
	t.state = jsAfterValue
	if t.record {
		t.members[len(t.members)-1].valEnd = base + end
	}
	if t.capture >= 0 {
		t.keep(b[t.capFrom:end])
		t.capture = -1
	}
}

// keep adds part of the value being captured, within the bound.
func (t *jsonTop) keep(part []byte) {
	w := t.capture
	if t.overflow[w] {
		return
	}
	if len(t.got[w])+len(part) > t.max {
		t.overflow[w], t.got[w] = true, t.got[w][:0]
		return
	}
	t.got[w] = append(t.got[w], part...)
}

// topMembers reads the whole JSON object data with t (set to record) and returns its top-level
// members, and whether data is such an object.
func (t *jsonTop) topMembers(data []byte) ([]jsonMember, bool) {
	t.record = true
	t.reset()
	t.feed(data)
	return t.members, t.whole()
}

// lastMember returns the last top-level member of data with the key name (as written), or
// false.
func lastMember(members []jsonMember, data []byte, name string) (jsonMember, bool) {
	for i := len(members) - 1; i >= 0; i-- {
		if string(members[i].key(data)) == name {
			return members[i], true
		}
	}
	return jsonMember{}, false
}

// removal is the span to cut from data to remove members[i] with the comma and whitespace that
// join it to its neighbours, leaving the object well formed: from the end of the member before
// it, or for the first member up to the next member's key.
func removal(members []jsonMember, i int) (from, to int) {
	m := members[i]
	switch {
	case i > 0:
		return members[i-1].valEnd, m.valEnd
	case len(members) > 1:
		return m.keyStart, members[1].keyStart
	}
	return m.keyStart, m.valEnd
}
