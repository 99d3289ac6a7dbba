// Command gatekeeper is the SSH two-factor gate of an HPC lander node. This
// file only wires cobra commands to the packages that do the work; signals
// are handled here and nowhere else.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"gatekeeper/config"
	"gatekeeper/enroll"
	"gatekeeper/gatekeeper"
	"gatekeeper/gatekeeper/admin"
	"gatekeeper/gatekeeper/store"
)

// Set by the Makefile with -ldflags "-X main.version=... -X main.commit=...".
var (
	version = "dev"
	commit  = ""
)

// shutdownGrace is how long SIGTERM lets live sessions finish.
const shutdownGrace = 30 * time.Second

func main() {
	if err := newRootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "gatekeeper:", err)
		os.Exit(1)
	}
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "gatekeeper",
		Short:         "SSH two-factor gate in front of an HPC lander's sshd",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().String("config", "", "config file (default $GATEKEEPER_CONFIG or /etc/gatekeeper/gatekeeper.yaml)")
	root.AddCommand(newServeCmd(), newConfigCmd(), newEnrollCmd(), newVersionCmd())
	return root
}

// loadConfig reads the config named by --config, with flags from fs
// overriding it where they were set.
func loadConfig(cmd *cobra.Command, fs *pflag.FlagSet) (*config.Config, error) {
	file, _ := cmd.Flags().GetString("config")
	return config.Load(file, fs)
}

func newLogger(format string, w io.Writer) *slog.Logger {
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, nil))
	}
	return slog.New(slog.NewJSONHandler(w, nil))
}

func newServeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the daemon (SSH front door and admin socket)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd, cmd.Flags())
			if err != nil {
				return err
			}
			reload := func() (*config.Config, error) { return loadConfig(cmd, cmd.Flags()) }
			return serve(cmd.Context(), cfg, newLogger(cfg.LogFormat, os.Stderr), reload)
		},
	}
	config.RegisterFlags(cmd.Flags())
	return cmd
}

// serve runs the daemon until SIGINT or SIGTERM, then shuts down in order:
// the SSH front door first (stop accepting, let sessions finish up to
// shutdownGrace), the admin socket next, the store last. SIGHUP re-reads the
// config with reload and applies its policy settings to new logins.
func serve(ctx context.Context, cfg *config.Config, log *slog.Logger, reload func() (*config.Config, error)) error {
	st, err := store.Open(cfg.DB, cfg.SecretKeyFile)
	if err != nil {
		return err
	}
	defer st.Close()

	gk, err := gatekeeper.New(cfg, gatekeeper.Options{Store: st, Log: log})
	if err != nil {
		return err
	}
	sshLn, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	adminLn, err := admin.Listen(cfg.Admin.Socket)
	if err != nil {
		sshLn.Close()
		return fmt.Errorf("admin.socket: %w", err)
	}
	adm := &admin.Server{
		Enroll: &enroll.Service{
			Store: st, Issuer: cfg.TOTP.Issuer, Skew: cfg.TOTP.Skew,
			ConfirmWithin: cfg.Enroll.ConfirmWithin, Log: log,
		},
		Store: st,
		Log:   log,
	}

	errc := make(chan error, 2)
	go func() { errc <- gk.Serve(sshLn) }()
	go func() { errc <- adm.Serve(adminLn) }()
	log.Info("gatekeeper started", "version", version, "listen", sshLn.Addr().String(),
		"upstream", cfg.Upstream.Address, "admin_socket", cfg.Admin.Socket)

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)

	var runErr error
wait:
	for {
		select {
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				reloadConfig(gk, reload, log)
				continue
			}
			log.Info("shutting down", "signal", sig.String(), "grace", shutdownGrace.String())
		case runErr = <-errc:
			log.Error("listener failed; shutting down", "err", runErr)
		case <-ctx.Done():
		}
		break wait
	}

	drain, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := gk.Shutdown(drain); err != nil {
		log.Warn("sessions still open at the end of the grace period were closed", "err", err)
	}
	if err := adm.Shutdown(drain); err != nil {
		log.Warn("admin socket shutdown", "err", err)
	}
	log.Info("gatekeeper stopped")
	if errors.Is(runErr, gatekeeper.ErrServerClosed) {
		runErr = nil
	}
	return runErr
}

// reloadConfig applies a re-read config; a broken one is logged and the old
// settings stay in force, as sshd does on SIGHUP with a bad config.
func reloadConfig(gk *gatekeeper.Server, reload func() (*config.Config, error), log *slog.Logger) {
	cfg, err := reload()
	if err != nil {
		log.Error("config reload failed; keeping the current settings", "err", err)
		return
	}
	needRestart := gk.Reload(cfg)
	log.Info("config reloaded", "applied", "trusted_networks, rate_limit, totp.skew, failure_delay, login_grace_time, max_auth_tries")
	if len(needRestart) > 0 {
		log.Warn("changed settings that take effect only after a restart", "keys", needRestart)
	}
}

func newConfigCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Work with the config file"}
	cmd.AddCommand(&cobra.Command{
		Use:   "check",
		Short: "Validate the config and print the effective settings",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd, nil)
			if err != nil {
				return err
			}
			fmt.Fprint(cmd.OutOrStdout(), cfg.Effective())
			fmt.Fprintln(cmd.ErrOrStderr(), "config OK")
			return nil
		},
	})
	return cmd
}

func newEnrollCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "enroll USER",
		Short: "Link USER's authenticator app on this console (QR code, then one code)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadConfig(cmd, nil)
			if err != nil {
				return err
			}
			linker, closeFn, err := openLinker(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			defer closeFn()
			return enroll.Terminal(cmd.Context(), linker, args[0], cmd.InOrStdin(), cmd.OutOrStdout())
		},
	}
}

// openLinker talks to the running daemon over its admin socket and, only when
// no daemon runs, opens the database directly (bbolt allows one process).
func openLinker(ctx context.Context, cfg *config.Config) (enroll.Linker, func(), error) {
	client := admin.NewClient(cfg.Admin.Socket)
	err := client.Ping(ctx)
	if err == nil {
		return client, func() {}, nil
	}
	if !errors.Is(err, admin.ErrNoDaemon) {
		return nil, nil, err
	}
	st, err := store.Open(cfg.DB, cfg.SecretKeyFile)
	if err != nil {
		return nil, nil, err
	}
	svc := &enroll.Service{
		Store: st, Issuer: cfg.TOTP.Issuer, Skew: cfg.TOTP.Skew,
		ConfirmWithin: cfg.Enroll.ConfirmWithin, Log: newLogger(cfg.LogFormat, io.Discard),
	}
	return svc, func() { st.Close() }, nil
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print version and build information",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			c := commit
			if c == "" {
				if bi, ok := debug.ReadBuildInfo(); ok {
					for _, s := range bi.Settings {
						if s.Key == "vcs.revision" {
							c = s.Value
						}
					}
				}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "gatekeeper %s (commit %s, %s, %s/%s)\n",
				version, orUnknown(c), runtime.Version(), runtime.GOOS, runtime.GOARCH)
		},
	}
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}
