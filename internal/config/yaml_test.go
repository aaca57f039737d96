package config

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// badFiles maps every testdata/*.bad.yml to the exact error Load returns for
// it (with the required settings in the environment). {f} is the file's path.
var badFiles = map[string]string{
	"unknown_field.bad.yml":        `{f}:7: field "poll_intervl" not found in auth0 (did you mean "poll_interval"?)`,
	"unknown_top_level.bad.yml":    `{f}:1: field "tennant" not found at the top level (did you mean "tenant"?)`,
	"env_name_as_key.bad.yml":      `{f}:1: field "AUTH0_DOMAIN" not found at the top level (did you mean "auth0.domain"?)`,
	"wrong_section.bad.yml":        `{f}:3: field "write_key" not found in auth0 (did you mean "segment.write_key"?)`,
	"bad_duration.bad.yml":         `{f}:2: auth0.poll_interval (AUTH0_POLL_INTERVAL): "5x" is not a duration (e.g. 10s)`,
	"bare_number_duration.bad.yml": `{f}:1: shutdown_timeout (AUTHPIPE_SHUTDOWN_TIMEOUT): "8" is not a duration (e.g. 8s)`,
	"bad_integer.bad.yml":          `{f}:2: segment.batch_size (SEGMENT_BATCH_SIZE): "2.5" is not an integer (e.g. 250)`,
	"out_of_range.bad.yml":         `{f}:3: auth0.page_size (AUTH0_PAGE_SIZE): 500 must be between 1 and 100`,
	"section_not_mapping.bad.yml":  `{f}:1: auth0 must be a mapping of settings, found a single value`,
	"list_value.bad.yml":           `{f}:1: listen (AUTHPIPE_LISTEN): expected a single value, found a list`,
	"duplicate_key.bad.yml":        `{f}:4: auth0.domain (AUTH0_DOMAIN) is set twice (first at line 2)`,
	"duplicate_section.bad.yml":    `{f}:5: log is set twice (first at line 1)`,
	"syntax.bad.yml":               `{f}:3: mapping values are not allowed in this context`,
	"unclosed_quote.bad.yml":       `{f}:3: found unexpected end of stream`,
	"two_documents.bad.yml":        `{f}:3: a second YAML document is not allowed: one file holds one configuration`,
	"top_level_list.bad.yml":       `{f}:1: the top level must be a mapping of settings, found a list`,
	"merge_key.bad.yml":            `{f}:1: field "defaults" not found at the top level; {f}:4: merge keys (<<) are not supported: write the settings out`,
	"redis_url_password.bad.yml":   `{f}:3: redis.url (REDIS_URL): not a valid URL; percent-encode special characters in the password (e.g. redis://:PASSWORD@redis:6379/0; the value is not shown: it may contain a password)`,
	"bad_log_level.bad.yml":        `{f}:2: log.level (AUTHPIPE_LOG_LEVEL): "verbose" is not one of debug, info, warn, error`,
	"bad_tenant.bad.yml":           `{f}:1: tenant (AUTHPIPE_TENANT): "Acme Corp" must be 1 to 32 of a-z, 0-9, "_" and "-", starting with a letter or digit`,
	"tenants_not_mappings.bad.yml": `{f}:2: tenants[0] must be a mapping with name, auth0 and segment, found a single value; ` +
		`{f}:2: tenants[1] must be a mapping with name, auth0 and segment, found a single value`,
	"tenants_several.bad.yml": `{f}:6: field "pol_interval" not found in tenants[0].auth0 (did you mean "poll_interval"?); ` +
		`{f}:8: segment.endpoint is shared by all tenants: set it at the top level, not in tenants[0]; ` +
		`{f}:2: tenants[0].auth0.client_secret is required (in the file, or AUTH0_CLIENT_SECRET_ACME or AUTH0_CLIENT_SECRET_ACME_FILE); ` +
		`{f}:9: tenants[1].name: "Beta" must be 1 to 32 of a-z, 0-9, "_" and "-", starting with a letter or digit; ` +
		`{f}:9: tenants[1].auth0.client_secret is required; ` +
		`{f}:10: tenants[1].auth0.page_size: 500 must be between 1 and 100; ` +
		`{f}:11: tenants[2].name is required; ` +
		`{f}:11: tenants[2].auth0.client_id is required; ` +
		`{f}:11: tenants[2].auth0.client_secret is required`,
	"several.bad.yml": `{f}:4: auth0.poll_interval (AUTH0_POLL_INTERVAL): "soon" is not a duration (e.g. 10s); ` +
		`{f}:5: field "clientid" not found in auth0 (did you mean "client_id"?); ` +
		`{f}:8: segment must be a mapping of settings, found a list; ` +
		`{f}:1: tenant (AUTHPIPE_TENANT): "Acme" must be 1 to 32 of a-z, 0-9, "_" and "-", starting with a letter or digit; ` +
		`{f}:3: auth0.page_size (AUTH0_PAGE_SIZE): 0 must be between 1 and 100; ` +
		`{f}:7: log.level (AUTHPIPE_LOG_LEVEL): "loud" is not one of debug, info, warn, error`,
}

func TestLoadBadFiles(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.bad.yml"))
	require.NoError(t, err)
	require.Len(t, files, len(badFiles), "every testdata/*.bad.yml needs an entry in badFiles and the reverse")
	for _, path := range files {
		name := filepath.Base(path)
		t.Run(name, func(t *testing.T) {
			want, ok := badFiles[name]
			require.True(t, ok, "no expected error for %s", name)
			requireLoadError(t, with(validEnv(), "AUTHPIPE_CONFIG", path), "config: "+strings.ReplaceAll(want, "{f}", path))
		})
	}
}
