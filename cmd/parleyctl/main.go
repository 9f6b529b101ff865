// Command parleyctl operates a Parley cluster through the nodes' admin API.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"parley/client"
	"parley/wire"
)

type globals struct {
	node      string
	token     string
	tokenFile string
	asJSON    bool
	timeout   time.Duration
	actor     string
}

func main() {
	if err := newRoot().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "parleyctl:", err)
		os.Exit(1)
	}
}

// newRoot builds the command tree; tests run it with their own arguments.
func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "parleyctl",
		Short:         "Operate a Parley cluster",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.node, "node", "http://127.0.0.1:7070", "HTTP address of the node to talk to")
	pf.StringVar(&g.token, "token", os.Getenv("PARLEY_ADMIN_TOKEN"), "admin token (default $PARLEY_ADMIN_TOKEN)")
	pf.StringVar(&g.tokenFile, "token-file", "", "read the admin token from this file (a node keeps it in <data>/admin.token)")
	pf.BoolVar(&g.asJSON, "json", false, "print JSON for scripts instead of a table")
	pf.DurationVar(&g.timeout, "timeout", 30*time.Second, "give up after this long")
	pf.StringVar(&g.actor, "actor", os.Getenv("USER"), "who you are, for the audit log of user administration (default $USER)")

	cluster := &cobra.Command{Use: "cluster", Short: "Raft cluster membership and state"}
	cluster.AddCommand(statusCmd(g), initCmd(g), joinCmd(g), removeCmd(g), transferCmd(g), snapshotCmd(g))
	root.AddCommand(cluster)
	backups := &cobra.Command{Use: "backup", Short: "Back the state up online, and restore it into a new cluster"}
	backups.AddCommand(backupSaveCmd(g), backupVerifyCmd(g), backupRestoreCmd(g))
	root.AddCommand(backups)
	users := &cobra.Command{Use: "user", Short: "Administer user accounts (each change is in the audit log)"}
	users.AddCommand(userGetCmd(g), userSuspendCmd(g, true), userSuspendCmd(g, false), userPasswordCmd(g), userRevokeCmd(g), userDeleteCmd(g))
	root.AddCommand(users, auditCmd(g))
	return root
}

func (g *globals) admin(node string) (*client.Admin, error) {
	tok := g.token
	if g.tokenFile != "" {
		b, err := os.ReadFile(g.tokenFile)
		if err != nil {
			return nil, err
		}
		tok = strings.TrimSpace(string(b))
	}
	if tok == "" {
		return nil, errors.New("no admin token: use --token, --token-file or $PARLEY_ADMIN_TOKEN")
	}
	// No client-wide timeout: --timeout bounds every call through its
	// context, and a join may rightly wait long for a new server to catch up.
	return &client.Admin{Base: node, Token: tok, HTTP: &http.Client{}, Actor: g.actor}, nil
}

func (g *globals) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), g.timeout)
}

func statusCmd(g *globals) *cobra.Command {
	var nodes []string
	c := &cobra.Command{
		Use:   "status",
		Short: "Members, roles, leader, term, indexes, lag and snapshot of the cluster",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(nodes) == 0 {
				nodes = []string{g.node}
			}
			ctx, cancel := g.ctx()
			defer cancel()
			var all []*wire.ClusterStatus
			var errs []error
			for _, n := range nodes {
				a, err := g.admin(n)
				if err != nil {
					return err
				}
				st, err := a.Status(ctx)
				if err != nil {
					errs = append(errs, err)
					continue
				}
				all = append(all, st)
			}
			if g.asJSON {
				if err := json.NewEncoder(cmd.OutOrStdout()).Encode(all); err != nil {
					return err
				}
			} else {
				for _, st := range all {
					printStatus(cmd.OutOrStdout(), st)
				}
			}
			return errors.Join(errs...)
		},
	}
	c.Flags().StringSliceVar(&nodes, "nodes", nil, "ask each of these nodes (comma-separated HTTP addresses) instead of --node")
	return c
}

func printStatus(w io.Writer, st *wire.ClusterStatus) {
	role := ""
	if st.Edge {
		role = " edge"
	}
	if st.Region != "" {
		role += " in " + st.Region
	}
	fmt.Fprintf(w, "node %s%s: %s, term %d, leader %s (%s)\n", st.Node, role, st.State, st.Term, orDash(st.Leader), orDash(st.LeaderAddr))
	fmt.Fprintf(w, "  commit %d, applied %d, last %d, snapshot %d (term %d)\n",
		st.CommitIndex, st.AppliedIndex, st.LastIndex, st.SnapshotIndex, st.SnapshotTerm)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  ID\tADDRESS\tROLE\tREGION\tAPPLIED\tLAG")
	for _, m := range st.Members {
		role := m.Suffrage
		if m.Edge {
			role = "Edge"
		}
		if m.ID == st.Leader {
			role += " (leader)"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\n", m.ID, m.Addr, role, orDash(m.Region), unknownIfNeg(m.Applied), unknownIfNeg(m.Lag))
	}
	tw.Flush()
	if st.Warning != "" {
		fmt.Fprintf(w, "  warning: %s\n", st.Warning)
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func unknownIfNeg(v int64) string {
	if v < 0 {
		return "?"
	}
	return fmt.Sprint(v)
}

func initCmd(g *globals) *cobra.Command {
	var servers []string
	c := &cobra.Command{
		Use:   "init --server id=addr --server id=addr ...",
		Short: "Found a cluster from empty nodes (send to one of them)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			var list []wire.ClusterServer
			for _, s := range servers {
				id, addr, ok := strings.Cut(s, "=")
				if !ok || id == "" || addr == "" {
					return fmt.Errorf("--server %q: want id=raft-address", s)
				}
				list = append(list, wire.ClusterServer{ID: id, Addr: addr})
			}
			if len(list) == 0 {
				return errors.New("no --server given")
			}
			return g.run(cmd, func(ctx context.Context, a *client.Admin) (any, error) { return nil, a.Init(ctx, list) })
		},
	}
	c.Flags().StringArrayVar(&servers, "server", nil, "a founding server as id=raft-address (repeat)")
	return c
}

func joinCmd(g *globals) *cobra.Command {
	var j wire.ClusterJoin
	c := &cobra.Command{
		Use:   "join --id ID --addr RAFT_ADDR [--edge | --nonvoter]",
		Short: "Add a server: as a non-voter, promoted once caught up; or an edge node, never promoted (send to any member)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if j.ID == "" || j.Addr == "" {
				return errors.New("--id and --addr are required")
			}
			if j.Edge && j.Nonvoter {
				return errors.New("--edge and --nonvoter: an edge is a non-voter already; give one of them")
			}
			return g.run(cmd, func(ctx context.Context, a *client.Admin) (any, error) { return nil, a.Join(ctx, j) })
		},
	}
	c.Flags().StringVar(&j.ID, "id", "", "the new server's id")
	c.Flags().StringVar(&j.Addr, "addr", "", "the new server's Raft address")
	c.Flags().BoolVar(&j.Nonvoter, "nonvoter", false, "keep it a non-voter (for now: a later join without it promotes it)")
	c.Flags().BoolVar(&j.Edge, "edge", false, "add an edge node (started with parley -edge): a non-voter for good, which serves clients and never votes")
	return c
}

func removeCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "remove ID",
		Short: "Remove a server from the cluster",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.run(cmd, func(ctx context.Context, a *client.Admin) (any, error) { return nil, a.Remove(ctx, args[0]) })
		},
	}
}

func transferCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "transfer-leader [ID]",
		Short: "Move leadership (before a planned stop of the leader)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := ""
			if len(args) == 1 {
				id = args[0]
			}
			return g.run(cmd, func(ctx context.Context, a *client.Admin) (any, error) { return nil, a.TransferLeader(ctx, id) })
		},
	}
}

func snapshotCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "snapshot",
		Short: "Snapshot the node's state now and truncate its log",
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.run(cmd, func(ctx context.Context, a *client.Admin) (any, error) { return a.Snapshot(ctx) })
		},
	}
}

// snapshotText is how a snapshot result reads in a terminal.
func snapshotText(r *wire.SnapshotResult) string {
	return fmt.Sprintf("snapshot at index %d (term %d)", r.Index, r.Term)
}

// run calls f against --node and prints its result.
func (g *globals) run(cmd *cobra.Command, f func(context.Context, *client.Admin) (any, error)) error {
	return g.print(cmd, f, func(out any) string {
		if r, ok := out.(*wire.SnapshotResult); ok {
			return snapshotText(r)
		}
		return fmt.Sprintf("%+v", out)
	})
}

// print calls f against --node and prints its result: JSON with --json
// ({"ok":true} for a call that returns nothing), else text renders it
// ("ok" for nothing).
func (g *globals) print(cmd *cobra.Command, f func(context.Context, *client.Admin) (any, error), text func(any) string) error {
	a, err := g.admin(g.node)
	if err != nil {
		return err
	}
	ctx, cancel := g.ctx()
	defer cancel()
	out, err := f(ctx, a)
	if err != nil {
		return err
	}
	w := cmd.OutOrStdout()
	switch {
	case g.asJSON && out != nil:
		return json.NewEncoder(w).Encode(out)
	case g.asJSON:
		_, err = fmt.Fprintln(w, `{"ok":true}`)
	case out != nil:
		_, err = fmt.Fprintln(w, text(out))
	default:
		_, err = fmt.Fprintln(w, "ok")
	}
	return err
}
