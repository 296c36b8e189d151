package ops_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestComposeAPI: `docker compose --profile api up` runs otpq api against
// the stack's Redis, with its keys from the ./api-keys secret (never in the
// file itself), published on loopback only.
func TestComposeAPI(t *testing.T) {
	require.NotContains(t, loadCompose(t, nil).ServiceNames(), "api", "opt-in: it needs a keys file")
	p := loadCompose(t, nil, "api")
	api, ok := p.Services["api"]
	require.True(t, ok)
	require.Equal(t, []string{"api"}, api.Profiles)
	require.Equal(t, "api", api.Command[0])
	otpqAccepts(t, api.Command)
	require.Contains(t, strings.Join(api.Command, " "), "--api-addr 0.0.0.0:8070")
	require.Equal(t, "redis://redis:6379/0", *api.Environment["OTPQ_REDIS_URL"])
	require.Len(t, api.Secrets, 1)
	require.Equal(t, "/run/secrets/"+api.Secrets[0].Source, *api.Environment["OTPQ_API_KEYS_FILE"], "the keys file is the mounted secret")
	sec := p.Secrets[api.Secrets[0].Source]
	require.Equal(t, filepath.Join(repoRoot(t), "api-keys"), sec.File)
	require.Len(t, api.Ports, 1)
	require.Equal(t, "127.0.0.1", api.Ports[0].HostIP)
	require.Equal(t, uint32(8070), api.Ports[0].Target)
	require.Equal(t, p.Services["worker"].Image, api.Image, "one image")
	require.Contains(t, api.DependsOn, "redis")
}
