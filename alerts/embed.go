// Package alerts ships authpipe's default threshold rules (thresholds.yml)
// and, beside them, the Prometheus alerting rules on authpipe's own metrics
// (prometheus/). The rules are embedded so `authpipe demo` runs from any
// directory.
package alerts

import _ "embed"

// Thresholds is the content of the shipped thresholds.yml.
//
//go:embed thresholds.yml
var Thresholds []byte
