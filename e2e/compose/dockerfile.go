package compose

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

// Instruction is one Dockerfile instruction after line continuations are
// joined and comment lines dropped.
type Instruction struct {
	// Line is the 1-based line the instruction starts on.
	Line int
	// Cmd is the instruction keyword in upper case: FROM, COPY, RUN, ...
	Cmd string
	// Flags are the leading --name[=value] options, e.g. "--from=build".
	Flags []string
	// Args are the remaining words, or the elements of a JSON array
	// (exec form); JSON is true in that case.
	Args []string
	JSON bool
	// Rest is the text after the flags, unsplit (for RUN's shell form).
	Rest string
}

// Flag returns the value of --name (or --name=value), and whether it was
// given.
func (in Instruction) Flag(name string) (string, bool) {
	for _, f := range in.Flags {
		k, v, _ := strings.Cut(strings.TrimPrefix(f, "--"), "=")
		if k == name {
			return v, true
		}
	}
	return "", false
}

// ParseDockerfile reads the file at path. See ParseDockerfileText.
func ParseDockerfile(path string) ([]Instruction, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read Dockerfile: %w", err)
	}
	ins, err := ParseDockerfileText(string(data))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return ins, nil
}

// ParseDockerfileText splits a Dockerfile into instructions. It handles
// comments, parser directives (only the default escape character is
// supported), backslash line continuations (comment lines inside one are
// dropped, as Docker does), leading --flags and the JSON exec form. It does
// not support heredocs and reports them as errors rather than misreading
// them.
func ParseDockerfileText(text string) ([]Instruction, error) {
	var (
		out     []Instruction
		buf     strings.Builder
		start   int
		lineNo  int
		leading = true // still where parser directives may appear
	)
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	flush := func() error {
		s := strings.TrimSpace(buf.String())
		buf.Reset()
		if s == "" {
			return nil
		}
		in, err := parseInstruction(start, s)
		if err != nil {
			return err
		}
		out = append(out, in)
		return nil
	}
	for sc.Scan() {
		lineNo++
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") {
			if leading {
				k, v, ok := strings.Cut(strings.TrimSpace(trimmed[1:]), "=")
				if ok && strings.EqualFold(strings.TrimSpace(k), "escape") && strings.TrimSpace(v) != `\` {
					return nil, fmt.Errorf("line %d: escape=%s is not supported by this parser", lineNo, strings.TrimSpace(v))
				}
			}
			continue // a comment, also inside a continuation
		}
		leading = false
		if buf.Len() == 0 {
			if trimmed == "" {
				continue
			}
			start = lineNo
		}
		if strings.HasSuffix(trimmed, `\`) {
			buf.WriteString(strings.TrimSuffix(trimmed, `\`))
			buf.WriteByte(' ')
			continue
		}
		buf.WriteString(trimmed)
		if err := flush(); err != nil {
			return nil, err
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return out, nil
}

func parseInstruction(line int, s string) (Instruction, error) {
	cmd, rest, _ := strings.Cut(s, " ")
	in := Instruction{Line: line, Cmd: strings.ToUpper(cmd)}
	rest = strings.TrimSpace(rest)
	if strings.Contains(rest, "<<") && (in.Cmd == "RUN" || in.Cmd == "COPY" || in.Cmd == "ADD") {
		return in, fmt.Errorf("line %d: heredocs are not supported by this parser", line)
	}
	for strings.HasPrefix(rest, "--") {
		f, r, _ := strings.Cut(rest, " ")
		in.Flags = append(in.Flags, f)
		rest = strings.TrimSpace(r)
	}
	in.Rest = rest
	if strings.HasPrefix(rest, "[") {
		var arr []string
		if err := json.Unmarshal([]byte(rest), &arr); err == nil {
			in.Args, in.JSON = arr, true
			return in, nil
		}
		// Not valid JSON: Docker falls back to the shell form too.
	}
	in.Args = strings.Fields(rest)
	return in, nil
}

// shellCommand is one simple command of a RUN line: leading NAME=value
// assignments and the words after them, with quotes removed and variables
// expanded.
type shellCommand struct {
	Env  []string
	Args []string
}

// splitShell splits a POSIX shell command line into simple commands at
// unquoted ;, &&, || and |, handling single and double quotes and backslash
// escapes, and expanding $NAME and ${NAME} from vars (outside single
// quotes). It is enough for the go build lines of our Dockerfiles, not a
// shell: a construct it does not understand is an error.
func splitShell(s string, vars map[string]string) ([]shellCommand, error) {
	var (
		cmds  []shellCommand
		words []string
		word  strings.Builder
		inW   bool // a word has started (even an empty quoted one)
	)
	endWord := func() {
		if inW {
			words = append(words, word.String())
		}
		word.Reset()
		inW = false
	}
	endCmd := func() {
		endWord()
		if len(words) == 0 {
			return
		}
		var c shellCommand
		i := 0
		for ; i < len(words); i++ {
			k, _, ok := strings.Cut(words[i], "=")
			if !ok || k == "" || strings.ContainsAny(k, "-./") {
				break
			}
			c.Env = append(c.Env, words[i])
		}
		c.Args = words[i:]
		cmds = append(cmds, c)
		words = nil
	}
	expand := func(i int) (int, error) { // s[i] == '$'
		if i+1 >= len(s) {
			word.WriteByte('$')
			return i + 1, nil
		}
		if s[i+1] == '(' {
			return 0, fmt.Errorf("command substitution $( is not supported by this checker")
		}
		if s[i+1] == '{' {
			end := strings.IndexByte(s[i:], '}')
			if end < 0 {
				return 0, fmt.Errorf("unterminated ${ in %q", s)
			}
			name := s[i+2 : i+end]
			if strings.ContainsAny(name, ":-+?#%/") {
				return 0, fmt.Errorf("parameter expansion ${%s} is not supported by this checker", name)
			}
			word.WriteString(vars[name])
			return i + end + 1, nil
		}
		j := i + 1
		for j < len(s) && (s[j] == '_' || s[j] >= 'A' && s[j] <= 'Z' || s[j] >= 'a' && s[j] <= 'z' || s[j] >= '0' && s[j] <= '9') {
			j++
		}
		if j == i+1 {
			word.WriteByte('$')
			return i + 1, nil
		}
		word.WriteString(vars[s[i+1:j]])
		return j, nil
	}
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n':
			endWord()
			i++
		case c == ';':
			endCmd()
			i++
		case c == '&' || c == '|':
			if i+1 < len(s) && s[i+1] == c {
				i += 2
			} else if c == '|' {
				i++
			} else {
				return nil, fmt.Errorf("background jobs (&) are not supported by this checker")
			}
			endCmd()
		case c == '\\':
			if i+1 < len(s) {
				word.WriteByte(s[i+1])
			}
			inW = true
			i += 2
		case c == '\'':
			end := strings.IndexByte(s[i+1:], '\'')
			if end < 0 {
				return nil, fmt.Errorf("unterminated single quote in %q", s)
			}
			word.WriteString(s[i+1 : i+1+end])
			inW = true
			i += end + 2
		case c == '"':
			inW = true
			i++
			for {
				if i >= len(s) {
					return nil, fmt.Errorf("unterminated double quote in %q", s)
				}
				if s[i] == '"' {
					i++
					break
				}
				if s[i] == '\\' && i+1 < len(s) && strings.IndexByte(`$"\`, s[i+1]) >= 0 {
					word.WriteByte(s[i+1])
					i += 2
					continue
				}
				if s[i] == '`' {
					return nil, fmt.Errorf("command substitution ` is not supported by this checker")
				}
				if s[i] == '$' {
					var err error
					if i, err = expand(i); err != nil {
						return nil, err
					}
					continue
				}
				word.WriteByte(s[i])
				i++
			}
		case c == '$':
			inW = true
			var err error
			if i, err = expand(i); err != nil {
				return nil, err
			}
		case c == '`' || c == '(' || c == ')' || c == '<' || c == '>':
			return nil, fmt.Errorf("shell construct %q is not supported by this checker", string(c))
		default:
			word.WriteByte(c)
			inW = true
			i++
		}
	}
	endCmd()
	return cmds, nil
}
