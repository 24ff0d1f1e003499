// Package golden compares test output with files under testdata/; run the
// tests with -update to rewrite them.
package golden

import (
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// Updating reports whether the test run was asked to rewrite its golden
// files (-update), for tests that keep expected output elsewhere than in
// testdata/<file> (e.g. inside txtar archives).
func Updating() bool { return *update }

// Assert fails t unless got equals the file testdata/<file>.
func Assert(t testing.TB, file, got string) {
	t.Helper()
	path := filepath.Join("testdata", file)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if string(want) != got {
		t.Errorf("%s differs from the golden file:\n--- got\n%s--- want\n%s", path, got, want)
	}
}
