package metricsauth

import (
	"context"
	"errors"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
)

type countingReviewer struct {
	authn, authz int
	fail         bool
}

func (c *countingReviewer) Authenticate(_ context.Context, token string) (authnv1.UserInfo, bool, error) {
	c.authn++
	if c.fail {
		return authnv1.UserInfo{}, false, errors.New("API server unreachable")
	}
	return authnv1.UserInfo{Username: "sa:" + token}, token == "good", nil
}

func (c *countingReviewer) Authorize(_ context.Context, u authnv1.UserInfo, verb, path string) (bool, string, error) {
	c.authz++
	if c.fail {
		return false, "", errors.New("API server unreachable")
	}
	return path == "/metrics", "", nil
}

// Answers are kept for their TTL (refusals shorter), errors never.
func TestCacheTTLs(t *testing.T) {
	now := time.Unix(0, 0)
	r := &countingReviewer{}
	c := NewCache(r, func() time.Time { return now })
	ctx := context.Background()
	for range 3 {
		if _, ok, _ := c.Authenticate(ctx, "good"); !ok {
			t.Fatal("good token refused")
		}
		if _, ok, _ := c.Authenticate(ctx, "bad"); ok {
			t.Fatal("bad token accepted")
		}
	}
	if r.authn != 2 {
		t.Fatalf("%d TokenReviews, want 2 (one per token)", r.authn)
	}
	now = now.Add(authnDenyTTL + time.Second)
	_, _, _ = c.Authenticate(ctx, "good")
	_, _, _ = c.Authenticate(ctx, "bad")
	if r.authn != 3 {
		t.Fatalf("%d TokenReviews after the refusal's TTL, want 3 (the refusal asked again)", r.authn)
	}
	u := authnv1.UserInfo{Username: "sa:good"}
	_, _, _ = c.Authorize(ctx, u, "get", "/metrics")
	_, _, _ = c.Authorize(ctx, u, "get", "/metrics")
	if r.authz != 1 {
		t.Fatalf("%d SubjectAccessReviews, want 1", r.authz)
	}
	r.fail = true
	now = now.Add(authzTTL + time.Second)
	for range 2 {
		if _, _, err := c.Authorize(ctx, u, "get", "/metrics"); err == nil {
			t.Fatal("no error while the API server is unreachable")
		}
	}
	if r.authz != 3 {
		t.Fatalf("%d SubjectAccessReviews: an error must not be cached", r.authz)
	}
}
