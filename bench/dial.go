package bench

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"time"

	"golang.org/x/sync/errgroup"

	"parley/client"
)

// Reconnecting scenarios (mixed, storm) dial a client up to dialAttempts
// times, doubling the pause from dialRetry: a connection storm on a small
// machine drops some handshakes, and one failed dial must not fail a run.
const (
	dialAttempts = 5
	dialRetry    = 100 * time.Millisecond
)

// dialRetrying dials cfg and runs setup on the new client (nil: none),
// retrying both a few times; a client whose setup failed is closed. A 401
// or the end of ctx stops at once.
func dialRetrying(ctx context.Context, cfg client.Config, setup func(*client.Client) error) (*client.Client, error) {
	delay := dialRetry
	for attempt := 1; ; attempt++ {
		c, err := client.Dial(ctx, cfg)
		if err == nil {
			if setup == nil {
				return c, nil
			}
			if err = setup(c); err == nil {
				return c, nil
			}
			_ = c.Close()
		}
		if attempt == dialAttempts || ctx.Err() != nil || errors.Is(err, client.ErrUnauthorized) {
			return nil, err
		}
		if !sleepCtx(ctx, delay) {
			return nil, ctx.Err()
		}
		delay *= 2
	}
}

// sdkLogger is the SDK's logger in a worker: errors only, to stderr.
func sdkLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
}

// closeClients closes the clients that are not nil, 64 at a time, and
// returns how many there were.
func closeClients(clients []*client.Client) int64 {
	var closers errgroup.Group
	closers.SetLimit(64)
	n := int64(0)
	for _, c := range clients {
		if c != nil {
			n++
			closers.Go(c.Close)
		}
	}
	_ = closers.Wait() // Close never fails
	return n
}
