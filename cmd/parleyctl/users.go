package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"parley/client"
	"parley/wire"
)

func userGetCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "get USER",
		Short: "Show a user (by id or username): account, suspension, devices",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.print(cmd, func(ctx context.Context, a *client.Admin) (any, error) { return a.User(ctx, args[0]) }, func(v any) string {
				u := v.(*wire.AdminUser)
				var b strings.Builder
				fmt.Fprintf(&b, "user %d %q, created %s, suspended %v", u.ID, u.Username, msTime(u.CreatedAt), u.Suspended)
				if u.LastSeen != 0 {
					fmt.Fprintf(&b, ", last seen %s", msTime(u.LastSeen))
				}
				b.WriteString("\n")
				tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "DEVICE\tNAME\tCREATED\tREVOKED")
				for _, d := range u.Devices {
					fmt.Fprintf(tw, "%d\t%s\t%s\t%v\n", d.ID, d.Name, msTime(d.CreatedAt), d.Revoked)
				}
				tw.Flush()
				return strings.TrimRight(b.String(), "\n")
			})
		},
	}
}

func userSuspendCmd(g *globals, on bool) *cobra.Command {
	use, short := "suspend USER", "Suspend a user: their connections close, logins and connections are refused (403)"
	if !on {
		use, short = "unsuspend USER", "Lift a suspension"
	}
	return &cobra.Command{
		Use: use, Short: short, Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.run(cmd, func(ctx context.Context, a *client.Admin) (any, error) { return nil, a.Suspend(ctx, args[0], on) })
		},
	}
}

func userPasswordCmd(g *globals) *cobra.Command {
	var file string
	c := &cobra.Command{
		Use:   "password USER",
		Short: "Set a user's password (read from --password-file, or the first line of standard input) and revoke all their devices",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var pw string
			if file != "" {
				b, err := os.ReadFile(file)
				if err != nil {
					return err
				}
				pw = strings.TrimRight(string(b), "\r\n")
			} else {
				line, err := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
				if err != nil && line == "" {
					return errors.New("no password on standard input")
				}
				pw = strings.TrimRight(line, "\r\n")
			}
			return g.run(cmd, func(ctx context.Context, a *client.Admin) (any, error) { return nil, a.ResetPassword(ctx, args[0], pw) })
		},
	}
	c.Flags().StringVar(&file, "password-file", "", "read the new password from this file (not from the command line, where others may see it)")
	return c
}

func userRevokeCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke USER DEVICE",
		Short: "Revoke one of a user's devices: its token is refused and its connections close",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			dev, err := strconv.ParseUint(args[1], 10, 64)
			if err != nil {
				return fmt.Errorf("device %q is not a device id", args[1])
			}
			return g.run(cmd, func(ctx context.Context, a *client.Admin) (any, error) { return nil, a.RevokeDevice(ctx, args[0], dev) })
		},
	}
}

func auditCmd(g *globals) *cobra.Command {
	var after string
	var limit int
	c := &cobra.Command{
		Use:   "audit",
		Short: "List the audit log of user administration, oldest first",
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.print(cmd, func(ctx context.Context, a *client.Admin) (any, error) { return a.Audit(ctx, after, limit) }, func(v any) string {
				p := v.(*wire.AuditPage)
				var b strings.Builder
				tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "WHEN\tACTION\tUSER\tDEVICE\tWHO\tIDX")
				for _, e := range p.Entries {
					action := e.Action
					if e.Action == "suspend" && !e.Suspended {
						action = "unsuspend"
					}
					if e.What != "" {
						action = e.What
					}
					fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%d.%d\n", msTime(e.Ts), action, e.User, e.Device, e.Who, e.Index, e.N)
				}
				tw.Flush()
				if p.More {
					fmt.Fprintf(&b, "more: parleyctl audit --after %s\n", p.Next)
				}
				return strings.TrimRight(b.String(), "\n")
			})
		},
	}
	c.Flags().StringVar(&after, "after", "", "page after this position (the previous page's next)")
	c.Flags().IntVar(&limit, "limit", 100, "entries per page (at most 1000)")
	return c
}

func msTime(ms int64) string {
	if ms == 0 {
		return "-"
	}
	return time.UnixMilli(ms).UTC().Format(time.RFC3339)
}

func userDeleteCmd(g *globals) *cobra.Command {
	var yes bool
	c := &cobra.Command{
		Use:   "delete USER",
		Short: "Delete an account: name freed, devices revoked, groups left; its messages stay, from a deleted account",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !yes {
				return errors.New("deleting an account cannot be undone: add --yes")
			}
			return g.run(cmd, func(ctx context.Context, a *client.Admin) (any, error) { return nil, a.DeleteUser(ctx, args[0]) })
		},
	}
	c.Flags().BoolVar(&yes, "yes", false, "really delete the account")
	return c
}
