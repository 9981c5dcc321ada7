package audit

import "context"

// Actor is who makes a request: the admin key the transport authenticated,
// and the client's address.
type Actor struct {
	KeyID  string
	Source string
}

type actorKey struct{}

// WithActor returns ctx carrying a; the transport sets it once it has
// authenticated the caller, and writes record it.
func WithActor(ctx context.Context, a Actor) context.Context {
	return context.WithValue(ctx, actorKey{}, a)
}

// ActorFrom returns the actor ctx carries (the zero Actor if none).
func ActorFrom(ctx context.Context) Actor {
	a, _ := ctx.Value(actorKey{}).(Actor)
	return a
}
