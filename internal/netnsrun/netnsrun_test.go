package netnsrun

import (
	"errors"
	"os"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netns"
)

// newNetns makes an anonymous network namespace, gone when the test closes its handle.
func newNetns(t *testing.T) netns.NsHandle {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	require.NoError(t, err)
	defer orig.Close()
	ns, err := netns.New()
	require.NoError(t, err)
	t.Cleanup(func() { ns.Close() })
	// Without a way back the thread would stay in the new namespace: fail loudly.
	if err := netns.Set(orig); err != nil {
		panic(err)
	}
	return ns
}

func TestRun(t *testing.T) {
	errFn := errors.New("fn failed")
	notNetns, err := os.Open("/dev/null")
	require.NoError(t, err)
	t.Cleanup(func() { notNetns.Close() })
	own, err := netns.Get()
	require.NoError(t, err)
	t.Cleanup(func() { own.Close() })

	cases := []struct {
		name    string
		ns      netns.NsHandle
		fnErr   error
		ran     bool
		wantErr string // "" for fn's error as it is
	}{
		{"own namespace", netns.None(), nil, true, ""},
		{"own namespace, fn fails", netns.None(), errFn, true, ""},
		{"other namespace", newNetns(t), nil, true, ""},
		{"other namespace, fn fails", newNetns(t), errFn, true, ""},
		{"not a namespace", netns.NsHandle(notNetns.Fd()), nil, false, "enter netns"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// fn runs on Run's goroutine, where a failed require would hang Run: note, check after.
			ran, inside := false, false
			err := Run(c.ns, func() error {
				ran = true
				in, err := netns.Get()
				if err != nil {
					return err
				}
				defer in.Close()
				want := c.ns
				if !c.ns.IsOpen() {
					want = own
				}
				inside = in.Equal(want)
				return c.fnErr
			})
			require.Equal(t, c.ran, ran)
			if c.wantErr != "" {
				require.ErrorContains(t, err, c.wantErr)
				return
			}
			require.Equal(t, c.fnErr, err)
			require.True(t, inside, "fn runs in the namespace")

			after, err := netns.Get()
			require.NoError(t, err)
			defer after.Close()
			require.True(t, after.Equal(own), "the caller stays in its namespace")
		})
	}
}
