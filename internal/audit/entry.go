package audit

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"time"
)

// Kinds of entry.
const (
	// KindRequest is written before anything is done or shown: for a read,
	// with the records it returns and its status; for a change, with the
	// records it is about to change and a null status.
	KindRequest = "request"
	// KindResult follows the request entry of a change once it took
	// effect: its status and how many records changed.
	KindResult = "result"
	// KindGap stands for entries a sink lost while it was down for longer
	// than its queue holds (Affected says how many).
	KindGap = "gap"
)

// Outcomes.
const (
	OutcomeAllowed = "allowed"
	OutcomeDenied  = "denied"
	// OutcomeRefused: no sink took the request's entry, so the request was
	// answered 503 (or the command exited) with nothing done or shown.
	OutcomeRefused = "refused"
)

// Authentication methods.
const (
	AuthJWT    = "jwt"
	AuthStatic = "static"
	AuthOS     = "os" // a command line: the OS user and host
	AuthNone   = "none"
)

// ReasonUnavailable is the reason of a request refused because no sink took
// its entry.
const ReasonUnavailable = "audit_unavailable"

// MethodCLI is the method of a command line's entries.
const MethodCLI = "CLI"

// Entry is one audit record. Its JSON (field order as below) is the line
// written to a sink; see the package doc for what each field means. The
// fields down to latency_seconds are always present; the rest only when the
// operation has them.
type Entry struct {
	Seq             uint64              `json:"seq"`
	Prev            string              `json:"prev"`
	ID              string              `json:"id"`
	Kind            string              `json:"kind"`
	Part            int                 `json:"part"`
	Parts           int                 `json:"parts"`
	Time            time.Time           `json:"time"`
	Host            string              `json:"host"`
	RemoteAddr      string              `json:"remote_addr"`
	Auth            string              `json:"auth"`
	Sub             string              `json:"sub"`
	JTI             string              `json:"jti"`
	Exp             *time.Time          `json:"exp"`
	TokenThumbprint string              `json:"token_thumbprint"`
	ClaimsVerified  bool                `json:"claims_verified"`
	Method          string              `json:"method"`
	Path            string              `json:"path"`
	Query           map[string][]string `json:"query"`
	Operation       string              `json:"operation"`
	Resource        string              `json:"resource"`
	Outcome         string              `json:"outcome"`
	Reason          string              `json:"reason"`
	Status          *int                `json:"status"`
	LatencySeconds  float64             `json:"latency_seconds"`

	Tenants    []string     `json:"tenants,omitempty"`
	Records    []Record     `json:"records,omitempty"`
	Missing    []string     `json:"missing,omitempty"`
	Window     *Window      `json:"window,omitempty"`
	RuleFiles  []FileDigest `json:"rule_files,omitempty"`
	Rules      []string     `json:"rules,omitempty"`
	BackfillID string       `json:"backfill_id,omitempty"`
	Affected   *int         `json:"affected,omitempty"`
}

// Record is a dead letter read or changed.
type Record struct {
	ID    string `json:"id"`
	LogID string `json:"log_id"`
}

// Window is a backfill's window; Until nil means "up to now".
type Window struct {
	Since time.Time  `json:"since"`
	Until *time.Time `json:"until"`
}

// FileDigest is a rule file and the SHA-256 (hex) of its content; Error
// says why it could not be read (SHA256 "").
type FileDigest struct {
	Path   string `json:"path"`
	SHA256 string `json:"sha256"`
	Error  string `json:"error,omitempty"`
}

// MaxListPart bounds the records (and missing ids) of one entry: an entry
// with more is written as several parts that share its id.
const MaxListPart = 250

// Split returns e as the entries to write: e itself (part 1 of 1), or, when
// its records or missing ids are longer than MaxListPart, parts 1..n of n,
// each with every other field of e and the next slice of each list. Nothing
// is cut.
func Split(e Entry) []Entry {
	n := max(chunkCount(len(e.Records)), chunkCount(len(e.Missing)), 1)
	out := make([]Entry, n)
	for i := range n {
		p := e
		p.Part, p.Parts = i+1, n
		p.Records = slice(e.Records, i)
		p.Missing = slice(e.Missing, i)
		out[i] = p
	}
	return out
}

func chunkCount(n int) int { return (n + MaxListPart - 1) / MaxListPart }

func slice[T any](s []T, i int) []T {
	lo := i * MaxListPart
	if lo >= len(s) {
		return nil
	}
	return s[lo:min(lo+MaxListPart, len(s))]
}

// Marshal is the line of e, without the line break.
func Marshal(e Entry) ([]byte, error) {
	if e.Query == nil {
		e.Query = map[string][]string{}
	}
	return json.Marshal(e)
}

// Hash is the chain's name for an entry: base64url (no padding) of SHA-256
// of its line exactly as stored, without the line break.
func Hash(line []byte) string {
	sum := sha256.Sum256(line)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// Thumbprint is a Bearer token's name in the trail: base64url (no padding)
// of SHA-256 of the compact token as sent.
func Thumbprint(token string) string { return Hash([]byte(token)) }

// NewID returns a request id: 16 random hex characters.
func NewID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// IntPtr returns a pointer to n, for Status and Affected.
func IntPtr(n int) *int { return &n }
