// Command opgate runs the server and its host-side tools: serve, bootstrap,
// migrate, audit verify, keys rotate. It reads the environment and flags,
// wires the concrete store and ephemeral state to the domain services, and
// nothing imports it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage: opgate <command> [flags]

commands:
  serve [--demo]        run the server (embedded SQLite and in-process state by default;
                        --demo: a demonstration municipality on a temporary store)
  bootstrap             set up an empty store: first site, terminal and security administrator
  migrate               apply database migrations and exit
  audit verify          check the whole history's hash chain
  audit purge --before T  remove history past its retention and older than T (one audit event says what)
  keys rotate           add a new token signing key; old keys verify until their tokens expire
  service add NAME      create a service key for token introspection (printed once)
  emergency resume      lift an emergency stop from the server's host (last resort)

configuration comes from the environment (OPGATE_ADDR, OPGATE_DATABASE_URL,
OPGATE_REDIS_URL, OPGATE_RP_ID, OPGATE_RP_ORIGINS, OPGATE_SIGNING_KEY_FILE,
OPGATE_TLS_CERT, OPGATE_TLS_KEY, OPGATE_TLS_CLIENT_CA); see README.md.
`

// run is main without the process: tests call it.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = cmdServe(ctx, args[1:], stdout, stderr)
	case "bootstrap":
		err = cmdBootstrap(ctx, args[1:], stdout, stderr)
	case "migrate":
		err = cmdMigrate(ctx, args[1:], stdout, stderr)
	case "audit":
		if len(args) >= 2 && args[1] == "purge" {
			return cmdAuditPurge(ctx, args[2:], stdout, stderr)
		}
		if len(args) < 2 || args[1] != "verify" {
			fmt.Fprint(stderr, "usage: opgate audit verify | opgate audit purge --before RFC3339\n")
			return 2
		}
		return cmdAuditVerify(ctx, args[2:], stdout, stderr)
	case "keys":
		if len(args) < 2 || args[1] != "rotate" {
			fmt.Fprint(stderr, "usage: opgate keys rotate\n")
			return 2
		}
		err = cmdKeysRotate(ctx, args[2:], stdout, stderr)
	case "service":
		if len(args) < 3 || args[1] != "add" {
			fmt.Fprint(stderr, "usage: opgate service add NAME\n")
			return 2
		}
		err = cmdServiceAdd(ctx, args[2], stdout)
	case "emergency":
		if len(args) < 2 || args[1] != "resume" {
			fmt.Fprint(stderr, "usage: opgate emergency resume [--site-id ID] --reason TEXT\n")
			return 2
		}
		err = cmdEmergencyResume(ctx, args[2:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "opgate: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "opgate: %v\n", err)
		return 1
	}
	return 0
}
