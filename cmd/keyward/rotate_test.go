package main

import (
	"slices"
	"strings"
	"testing"
)

func TestRotateArgs(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		want    []string
		wantErr string
	}{
		{"ok/none", []string{"--data-dir", "d"}, []string{"--data-dir", "d"}, ""},
		{"ok/files", []string{"--new-key-file", "n", "-old-key-file=o1", "--data-dir=d", "--old-key-file", "o2,o3"},
			[]string{"--data-dir=d", "--master-key-file=n", "--previous-master-key-files=o1,o2,o3"}, ""},
		{"ok/serve-flags", []string{"--master-key-file", "n", "--previous-master-key-files", "o"},
			[]string{"--master-key-file", "n", "--previous-master-key-files", "o"}, ""},
		{"fail/missing-value", []string{"--new-key-file"}, nil, "needs a file"},
		{"fail/new-twice", []string{"--new-key-file", "a", "--new-key-file", "b"}, nil, "twice"},
		{"fail/both-forms", []string{"--master-key-file", "a", "--new-key-file", "b"}, nil, "once"},
		{"fail/both-old-forms", []string{"--old-key-file", "a", "--previous-master-key-files", "b"}, nil, "one way"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, help, err := rotateArgs(tc.args)
			if help {
				t.Fatal("help")
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || !slices.Equal(got, tc.want) {
				t.Fatalf("rotateArgs = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	if _, help, _ := rotateArgs([]string{"--data-dir", "d", "-h"}); !help {
		t.Fatal("-h is not help")
	}
}
