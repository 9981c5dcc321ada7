package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"
)

// maxSecretLen bounds what is read as a key or query: a key is 57 bytes; a
// runaway pipe should not be read into memory whole.
const maxSecretLen = 4096

// keyValues parses the --scopes, --metadata and --expire-time flags. Empty
// values give nil, which update sends to clear the field.
func (c *keysCmd) keyValues() (scopes []string, md map[string]string, expire *timestamppb.Timestamp, err error) {
	scopes = splitComma(c.scopes)
	if md, err = parseMetadata(c.metadata); err != nil {
		return nil, nil, nil, err
	}
	if c.expireTime != "" {
		t, err := time.Parse(time.RFC3339, c.expireTime)
		if err != nil {
			return nil, nil, nil, usageError("--expire-time %q: want RFC 3339, e.g. 2030-01-31T00:00:00Z", c.expireTime)
		}
		expire = timestamppb.New(t)
	}
	return scopes, md, expire, nil
}

// splitComma splits a comma-separated flag, dropping spaces and empty items.
func splitComma(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

// parseMetadata reads "k=v,k2=v2". Values may contain "=", not ",".
func parseMetadata(s string) (map[string]string, error) {
	items := splitComma(s)
	if len(items) == 0 {
		return nil, nil
	}
	md := make(map[string]string, len(items))
	for _, item := range items {
		k, v, ok := strings.Cut(item, "=")
		if k = strings.TrimSpace(k); !ok || k == "" {
			return nil, usageError("--metadata %q: want key=value pairs separated by commas", item)
		}
		if _, dup := md[k]; dup {
			return nil, usageError("--metadata: %q is given twice", k)
		}
		md[k] = strings.TrimSpace(v)
	}
	return md, nil
}

// readSecret reads the first line of r, e.g. a key piped into stdin. The
// value is never echoed in an error.
func readSecret(r io.Reader, from string) (string, error) {
	if r == nil {
		return "", usageError("nothing to read from %s", from)
	}
	line, err := bufio.NewReaderSize(io.LimitReader(r, maxSecretLen+1), maxSecretLen+1).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read %s: %w", from, err)
	}
	if len(line) > maxSecretLen {
		return "", usageError("%s: first line longer than %d bytes", from, maxSecretLen)
	}
	return strings.TrimSpace(line), nil
}

func readSecretFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", usageError("--key-file: %v", err)
	}
	defer f.Close()
	return readSecret(f, path)
}
