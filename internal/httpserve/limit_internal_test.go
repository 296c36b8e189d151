package httpserve

import (
	"net"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

// An IPv6 client counts as its /64, an IPv4 (or IPv4-mapped) one as its
// address: a subscriber cannot pass the per-client bound by rotating
// addresses of its own prefix.
func TestClientKey(t *testing.T) {
	key := func(ip string) string { return clientKey(&net.TCPAddr{IP: net.ParseIP(ip), Port: 1234}) }
	require.Equal(t, key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff:ffff:ffff:ffff"))
	require.NotEqual(t, key("2001:db8:1:2::1"), key("2001:db8:1:3::1"))
	require.Equal(t, "192.0.2.7", key("192.0.2.7"))
	require.Equal(t, "192.0.2.7", key("::ffff:192.0.2.7"))
	require.NotEqual(t, key("192.0.2.7"), key("192.0.2.8"))
	require.Equal(t, "?", clientKey(&net.UnixAddr{Name: "/tmp/s", Net: "unix"}))
}

// The default bound on connections is a quarter of the descriptor limit
// when that is below 4096 (issue 16 row 3: with `ulimit -n 256` a listener
// holds 64, so an ops and a callback listener cannot take the process's
// descriptors), at least 16, at most DefaultMaxConns; and it is what a
// Config without MaxConns gets under the process's own limit.
func TestMaxConnsQuarterOfDescriptorLimit(t *testing.T) {
	for nofile, want := range map[uint64]int{
		0: DefaultMaxConns, 40: 16, 256: 64, 1024: 256, 4095: 1023, 4096: DefaultMaxConns, 1 << 20: DefaultMaxConns,
	} {
		require.Equal(t, want, maxConnsFor(nofile), "RLIMIT_NOFILE %d", nofile)
	}
	var lim syscall.Rlimit
	require.NoError(t, syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim))
	require.Equal(t, maxConnsFor(lim.Cur), Config{}.withDefaults().MaxConns)
}
