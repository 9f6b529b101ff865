package raftlog

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// seedTerm is the term of a seeded snapshot; the first election after it
// runs in the next one.
const seedTerm = 1

// Seed prepares dir (a Config.Dir with no Raft state yet) to start a
// cluster from a state machine snapshot taken elsewhere at index: it
// writes a Raft snapshot at that index whose data is read from snapshot
// and whose configuration is servers, all voters. Each member of the new
// cluster is seeded with the same bytes and servers; started with
// Bootstrap false, they elect a leader among themselves and the log goes
// on after index, so the state machine (restored to index from the same
// snapshot) applies every new entry. This is how a backup becomes a new
// cluster (as etcdutl snapshot restore does for etcd).
func Seed(dir string, servers []Server, index uint64, snapshot io.Reader) error {
	if index == 0 {
		return errors.New("raftlog: seed at index 0")
	}
	if len(servers) == 0 {
		return errors.New("raftlog: seed without servers")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("raftlog: %w", err)
	}
	logs, err := OpenLogStore(filepath.Join(dir, "log"), nil, nil)
	if err != nil {
		return err
	}
	defer logs.Close()
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, 1, hclog.NewNullLogger())
	if err != nil {
		return fmt.Errorf("raftlog: snapshot store: %w", err)
	}
	has, err := raft.HasExistingState(logs, logs, snaps)
	if err != nil {
		return fmt.Errorf("raftlog: %w", err)
	}
	if has {
		return fmt.Errorf("raftlog: %s already holds Raft state: seed an empty directory", dir)
	}
	conf := raft.Configuration{}
	seen := map[string]bool{}
	for _, s := range servers {
		if s.ID == "" || s.Addr == "" || seen[s.ID] {
			return fmt.Errorf("raftlog: seed: bad or repeated server %+v", s)
		}
		seen[s.ID] = true
		conf.Servers = append(conf.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(s.ID), Address: raft.ServerAddress(s.Addr)})
	}
	_, trans := raft.NewInmemTransport("") // only for the snapshot's legacy peer list
	sink, err := snaps.Create(raft.SnapshotVersionMax, index, seedTerm, conf, index, trans)
	if err != nil {
		return fmt.Errorf("raftlog: seed snapshot: %w", err)
	}
	if _, err := io.Copy(sink, snapshot); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("raftlog: seed snapshot: %w", err)
	}
	if err := sink.Close(); err != nil {
		return fmt.Errorf("raftlog: seed snapshot: %w", err)
	}
	// Raft keeps its current term in the stable store; it must not be
	// below the snapshot's.
	if err := logs.SetUint64([]byte("CurrentTerm"), seedTerm); err != nil {
		return fmt.Errorf("raftlog: seed term: %w", err)
	}
	return nil
}
