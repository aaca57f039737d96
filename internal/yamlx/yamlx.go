// Package yamlx holds the YAML node helpers of authpipe's strict decoders
// (the configuration file, the threshold rule files): aliases, nulls, node
// kinds for messages, the line of a syntax error, the pairs of a mapping
// with the keys set twice, and the "did you mean" of an unknown key.
//
// It reads nodes and reports nothing itself: each format words its own
// errors, always with file and line. What it guarantees is that an alias, a
// null, a repeated key or a near-miss key means the same in every file
// authpipe reads. Nothing in a message it returns quotes a node's value.
package yamlx

import (
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// DocumentRoot returns the content of a document node, aliases resolved:
// nil for an empty document.
func DocumentRoot(n *yaml.Node) *yaml.Node {
	if n.Kind == yaml.DocumentNode {
		if len(n.Content) == 0 {
			return nil
		}
		n = n.Content[0]
	}
	return Resolve(n)
}

// Resolve follows alias nodes to the anchored node; nil for a chain of
// aliases that leads nowhere.
func Resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 100; i++ {
		n = n.Alias
	}
	if n != nil && n.Kind == yaml.AliasNode {
		return nil
	}
	return n
}

// IsNull reports whether n is a null scalar ("key:" with no value, ~, null).
func IsNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

// KindName describes a node's kind for messages; it never quotes the value.
func KindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return "a single value"
	default:
		return "an unexpected YAML node"
	}
}

// SyntaxError splits an error of yaml.v3's parser ("yaml: line 3: did not
// find …") into the line (0 when it names none) and the message, on one line.
func SyntaxError(err error) (line int, msg string) {
	msg = strings.TrimPrefix(strings.Join(strings.Fields(err.Error()), " "), "yaml: ")
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if num, text, ok := strings.Cut(rest, ": "); ok {
			if n, err := strconv.Atoi(num); err == nil {
				return n, text
			}
		}
	}
	return 0, msg
}

// Pairs calls fn with each key and value of mapping n, in order, aliases
// resolved (a nil value: an alias that leads nowhere), and first, the line
// where a plain key of the same name was set before in n (0 if none).
func Pairs(n *yaml.Node, fn func(k, v *yaml.Node, first int)) {
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := Resolve(n.Content[i]), Resolve(n.Content[i+1])
		if k == nil {
			k = n.Content[i]
		}
		first := 0
		if k.Kind == yaml.ScalarNode {
			if line, dup := seen[k.Value]; dup {
				first = line
			} else {
				seen[k.Value] = k.Line
			}
		}
		fn(k, v, first)
	}
}

// Closest returns the candidate the author of key probably meant: the
// nearest within two edits (fewer than key's length), the first in
// lexical order among equals; "" when none is near (or key is longer than
// 64 bytes: a typo is short).
func Closest(key string, candidates []string) string {
	if len(key) > 64 {
		return ""
	}
	best, bestDistance := "", 3
	for _, c := range candidates {
		if d := distance(key, c); d < bestDistance && d < len(key) || d == bestDistance && c < best {
			best, bestDistance = c, d
		}
	}
	return best
}

// distance is the Levenshtein distance between a and b.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
