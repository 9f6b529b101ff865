package bench

import (
	"encoding/json"
	"slices"
)

// Sharding: Plan splits a scenario's clients over the workers, at most
// Options.ConnsPerWorker connections each, and marshals one shard per
// worker (planShards).

// splitSizes splits n items into the fewest shards of at most per items,
// as evenly as possible.
func splitSizes(n, per int) []int {
	if n <= 0 {
		return nil
	}
	shards := (n + per - 1) / per
	sizes := make([]int, shards)
	for i := range sizes {
		sizes[i] = n / shards
		if i < n%shards {
			sizes[i]++
		}
	}
	return sizes
}

// splitWhole splits n items into the fewest shards of at most per items
// (at least one unit) made of whole units of unit items (a storm's
// circles, a reconnect's pairs), as evenly as possible.
func splitWhole(n, unit, per int) []int {
	sizes := splitSizes(n/unit, max(per/unit, 1))
	for i := range sizes {
		sizes[i] *= unit
	}
	return sizes
}

// planShards marshals one shard per size: mk gets the shard's number, the
// index of its first item over all shards, and its number of items.
func planShards(sizes []int, mk func(i, first, n int) any) ([]json.RawMessage, error) {
	shards := make([]json.RawMessage, 0, len(sizes))
	first := 0
	for i, n := range sizes {
		b, err := json.Marshal(mk(i, first, n))
		if err != nil {
			return nil, err
		}
		shards = append(shards, b)
		first += n
	}
	return shards, nil
}

// rotate returns urls starting at index i mod len: connection number i uses
// node i first and the others as fallbacks, spreading a cluster's load.
func rotate(urls []string, i int) []string {
	if len(urls) == 0 {
		return nil
	}
	k := i % len(urls)
	return append(slices.Clone(urls[k:]), urls[:k]...)
}
