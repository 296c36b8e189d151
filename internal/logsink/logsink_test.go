package logsink

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestBufferConcurrentWrites(t *testing.T) {
	var b Buffer
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fmt.Fprintf(&b, "line %d\n", i)
		}()
	}
	wg.Wait()
	out := b.String()
	require.Equal(t, 50, strings.Count(out, "\n"))
	for i := range 50 {
		require.Contains(t, out, fmt.Sprintf("line %d\n", i))
	}
}
