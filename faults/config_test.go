package faults

import (
	"strings"
	"testing"

	"github.com/sluice-dev/sluice/sidecar"
)

// TestConfigBadValues: configuration values a fuzzer (or a typo) produces.
// Each must be refused with a problem naming the variable, never accepted
// as a nonsense value, and the problem must not print a secret.
func TestConfigBadValues(t *testing.T) {
	const password = "pw-c0nf1g-s3cret"
	for _, tc := range []struct {
		key, value string
	}{
		{"SLUICE_BUFFER_BUDGET", "NaN"},
		{"SLUICE_RETRY_BODY_MAX", "NaN"},
		{"SLUICE_RETRY_BODY_MAX", "nanKiB"},
		{"SLUICE_BUFFER_BUDGET", "Inf"},
		{"SLUICE_BUFFER_BUDGET", "-0.5MiB"},
		{"SLUICE_INITIAL_RATE", "NaN"},
		{"SLUICE_RETRY_BUDGET", "NaN"},
		{"SLUICE_UPSTREAM_TIMEOUT", "-1s"},
		{"SLUICE_UPSTREAM_URL", "http://ops:" + password + "@ store:9200"},
		{"SLUICE_CANCEL_URL", "ftp://ops:" + password + "@store/${JOB}"},
		{"SLUICE_CLEANUP_URL", "http://ops:" + password + "@${JOB}/x"},
		{"SLUICE_PROGRESS_PROBE_URL", "gopher://ops:" + password + "@store/p"},
		// Found by FuzzEffectiveRedacts: a URL that parses with the whole
		// "scheme://user:password@host" in its fragment.
		{"SLUICE_CANCEL_URL", "#000://ops:" + password + "@store/_tasks/${JOB}/_cancel"},
		{"SLUICE_PROGRESS_PROBE_URL", "#000://ops:" + password + "@store/p"},
		// Found by FuzzEffectiveRedacts: a '#' ends the password early, so
		// the parser reads it as the port and says so in its error.
		{"SLUICE_CANCEL_URL", "A://ops:" + password + "#@store/_tasks/${JOB}/_cancel"},
		{"SLUICE_CANCEL_URL", "http://ops:" + password + "#@store/_tasks/${JOB}/_cancel"},
		{"SLUICE_UPSTREAM_URL", "http://ops:" + password + "#@store:9200"},
		{"SLUICE_AUTO_CANCEL_CAUSES", "store_throttling,,loader_hung"},
		{"SLUICE_DEFAULT_JOB_AUTO_CANCEL_CAUSES", "none,upstream_errors"},
	} {
		env := []string{"SLUICE_UPSTREAM_URL=http://store:9200", tc.key + "=" + tc.value}
		cfg, _, err := sidecar.LoadConfig(env)
		if err == nil {
			t.Errorf("%s=%q accepted; effective: %s", tc.key, tc.value, effective(cfg, tc.key))
			continue
		}
		if !strings.Contains(err.Error(), tc.key) {
			t.Errorf("%s=%q: the problem does not name the variable: %v", tc.key, tc.value, err)
		}
		if strings.Contains(err.Error(), password) {
			t.Errorf("%s=%q: the problem prints the URL's password: %v", tc.key, tc.value, err)
		}
	}
}

func effective(cfg sidecar.Config, key string) string {
	for _, kv := range cfg.Effective() {
		if kv[0] == key {
			return kv[0] + "=" + kv[1]
		}
	}
	return "?"
}
