package ops_test

import (
	"testing"

	"github.com/otpq/otpq/internal/redistest"
)

// TestMain runs the package's tests against a redis-server of their own.
func TestMain(m *testing.M) { redistest.Main(m) }
