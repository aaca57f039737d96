package rules

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"text/template"
	"text/template/parse"
)

// AnnotationData is what annotation templates see: {{ .Value }},
// {{ .Group }}, …
type AnnotationData struct {
	Rule, Tenant, Severity string
	GroupBy, Group         string // Group is "" for a rule without group_by
	Value, Threshold       string
	Window                 string
	Labels                 map[string]string
}

// maxAnnotation bounds an annotation template.
const maxAnnotation = 4096

// templateFuncs are the template functions annotations may call: the
// side-effect-free, bounded builtins (no printf widths, no call, no range).
var templateFuncs = map[string]bool{"and": true, "or": true, "not": true, "eq": true, "ne": true, "lt": true,
	"le": true, "gt": true, "ge": true, "len": true, "index": true, "print": true, "html": true, "js": true, "urlquery": true}

// checkTemplate allows fields, if, with and the functions above: an
// annotation renders in bounded time and size.
func checkTemplate(n parse.Node) error {
	switch n := n.(type) {
	case nil:
		return nil
	case *parse.ListNode:
		if n == nil {
			return nil
		}
		for _, c := range n.Nodes {
			if err := checkTemplate(c); err != nil {
				return err
			}
		}
	case *parse.TextNode, *parse.CommentNode:
	case *parse.ActionNode:
		return checkTemplate(n.Pipe)
	case *parse.IfNode:
		return errors.Join(checkTemplate(n.Pipe), checkTemplate(n.List), checkTemplate(n.ElseList))
	case *parse.WithNode:
		return errors.Join(checkTemplate(n.Pipe), checkTemplate(n.List), checkTemplate(n.ElseList))
	case *parse.PipeNode:
		if n == nil {
			return nil
		}
		for _, c := range n.Cmds {
			if err := checkTemplate(c); err != nil {
				return err
			}
		}
	case *parse.CommandNode:
		for _, a := range n.Args {
			if err := checkTemplate(a); err != nil {
				return err
			}
		}
	case *parse.IdentifierNode:
		if !templateFuncs[n.Ident] {
			return fmt.Errorf("function %s is not supported", n.Ident)
		}
	case *parse.ChainNode:
		return checkTemplate(n.Node)
	case *parse.FieldNode, *parse.VariableNode, *parse.DotNode, *parse.StringNode, *parse.NumberNode, *parse.BoolNode, *parse.NilNode:
	case *parse.RangeNode:
		return errors.New("range is not supported")
	case *parse.TemplateNode:
		return errors.New("template is not supported")
	default:
		return fmt.Errorf("%T is not supported", n)
	}
	return nil
}

var badField = regexp.MustCompile(`can't evaluate field (\w+) in type`)

func parseAnnotation(r *Rule, key, text string) (*template.Template, error) {
	if len(text) > maxAnnotation {
		return nil, fmt.Errorf("too long (%d bytes, at most %d)", len(text), maxAnnotation)
	}
	t, err := template.New(key).Option("missingkey=error").Parse(text)
	if err != nil {
		return nil, fmt.Errorf("invalid template: %s", strings.TrimPrefix(err.Error(), "template: "))
	}
	if len(t.Templates()) > 1 {
		return nil, errors.New("invalid template: define and block are not supported")
	}
	if err := checkTemplate(t.Tree.Root); err != nil {
		return nil, fmt.Errorf("invalid template: %w", err)
	}
	var buf bytes.Buffer
	sample := AnnotationData{Rule: r.Name, Tenant: "tenant", Severity: r.Severity, GroupBy: r.GroupBy, Group: "group",
		Value: "1", Threshold: "1", Window: "5m", Labels: r.Labels}
	if err := t.Execute(&buf, sample); err != nil {
		if m := badField.FindStringSubmatch(err.Error()); m != nil {
			return nil, fmt.Errorf("invalid template: no field .%s (want .Rule, .Tenant, .Severity, .GroupBy, .Group, .Value, .Threshold, .Window or .Labels)", m[1])
		}
		return nil, fmt.Errorf("invalid template: %s", strings.TrimPrefix(err.Error(), "template: "))
	}
	return t, nil
}

// Annotation renders the rule's annotation key for data. A template that
// fails at run time (it passed the same check with sample data at load)
// gives its text unrendered, with the error.
func (r *Rule) Annotation(key string, data AnnotationData) (string, error) {
	var buf bytes.Buffer
	if err := r.annotations[key].Execute(&buf, data); err != nil {
		return r.Annotations[key], err
	}
	return buf.String(), nil
}
