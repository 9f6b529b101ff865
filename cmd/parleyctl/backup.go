package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"parley/backup"
	"parley/raftlog"
)

func backupSaveCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "save FILE",
		Short: "Save a consistent copy of the state of --node (any member; writes go on) to FILE",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, err := g.admin(g.node)
			if err != nil {
				return err
			}
			path := args[0]
			tmp, err := os.CreateTemp(filepath.Dir(path), ".parley-state-*")
			if err != nil {
				return err
			}
			defer os.Remove(tmp.Name())
			defer tmp.Close()
			ctx, cancel := g.ctx()
			defer cancel()
			info, err := a.Backup(ctx, tmp)
			if err != nil {
				return err
			}
			out, err := os.OpenFile(path+".partial", os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
			if err != nil {
				return err
			}
			defer os.Remove(out.Name())
			meta := backup.Meta{AppliedIndex: info.AppliedIndex, CreatedAt: time.Now().UnixMilli(), Node: info.Node, StateSHA256: info.SHA256}
			if err := backup.Write(out, meta, tmp); err != nil {
				out.Close()
				return err
			}
			if err := out.Sync(); err != nil {
				out.Close()
				return err
			}
			if err := out.Close(); err != nil {
				return err
			}
			if err := os.Rename(out.Name(), path); err != nil {
				return err
			}
			meta.Format, meta.StateBytes = backup.Format, info.Bytes
			return printBackup(cmd, g, meta, "saved "+path)
		},
	}
}

func backupVerifyCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "verify FILE",
		Short: "Check a backup file whole against its checksum",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			meta, err := backup.Verify(args[0])
			if err != nil {
				return err
			}
			return printBackup(cmd, g, meta, args[0]+" is whole")
		},
	}
}

func backupRestoreCmd(g *globals) *cobra.Command {
	var data, servers string
	c := &cobra.Command{
		Use:   "restore FILE",
		Short: "Seed one member's empty data directory from a backup (offline); do it for every member with the same --servers, then start them with -bootstrap=false",
		Long: `Seeds the data directory of one member of a new cluster from a backup
file: the state as of the backup's index, and a Raft snapshot at that
index whose members are --servers. Restore every member of the new
cluster from the same file with the same --servers, then start each with
its -id, -raft (or -advertise) matching --servers, -bootstrap=false and the
cluster's -cluster-key-file. They elect a leader and go on after the
backup's index; tokens issued before the backup stay valid.

A one-node cluster: parleyctl backup restore b.tar --data ./data --servers node1=127.0.0.1:7072`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			list, err := parseServers(servers)
			if err != nil {
				return err
			}
			if data == "" {
				return fmt.Errorf("--data is required")
			}
			meta, err := backup.Restore(args[0], data, list)
			if err != nil {
				return err
			}
			return printBackup(cmd, g, meta, fmt.Sprintf("restored into %s for %d member(s)", data, len(list)))
		},
	}
	c.Flags().StringVar(&data, "data", "", "the member's data directory (empty, or without state and raft)")
	c.Flags().StringVar(&servers, "servers", "", "every member of the new cluster: id=raft-address,... (e.g. n1=10.0.0.1:7072,n2=10.0.0.2:7072,n3=10.0.0.3:7072)")
	return c
}

func parseServers(s string) ([]raftlog.Server, error) {
	var out []raftlog.Server
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		id, addr, ok := strings.Cut(part, "=")
		if !ok || id == "" || addr == "" {
			return nil, fmt.Errorf("--servers: %q is not id=address", part)
		}
		out = append(out, raftlog.Server{ID: id, Addr: addr})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("--servers is required: id=raft-address for every member")
	}
	return out, nil
}

func printBackup(cmd *cobra.Command, g *globals, meta backup.Meta, what string) error {
	w := cmd.OutOrStdout()
	if g.asJSON {
		return json.NewEncoder(w).Encode(meta)
	}
	_, err := fmt.Fprintf(w, "%s: state at index %d from %s, %d bytes, sha256 %s\n", what, meta.AppliedIndex, meta.Node, meta.StateBytes, meta.StateSHA256)
	return err
}
