package app

import (
	"log/slog"

	"github.com/keyward/keyward/internal/abuse"
	"github.com/keyward/keyward/internal/config"
	"github.com/keyward/keyward/internal/validate"
)

// newAbuse builds the failed-validation throttle and the refusal floor.
func newAbuse(cfg *config.Config, log *slog.Logger) (*abuse.Throttle, *abuse.Floor, error) {
	t, err := abuse.New(abuse.Options{
		PerSecond: cfg.AbuseFailuresPerSecond,
		Burst:     cfg.AbuseBurst,
		Surfaces:  cfg.AbuseSurfaces(),
		Logger:    log,
	})
	if err != nil {
		return nil, nil, err
	}
	return t, abuse.NewFloor(cfg.AbuseRefusalFloor), nil
}

// pacer is f as a validate.Pacer: nil, not a nil *Floor, when off.
func pacer(f *abuse.Floor) validate.Pacer {
	if f == nil {
		return nil
	}
	return f
}
