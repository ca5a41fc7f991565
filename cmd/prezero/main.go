// Command prezero makes disk-image backups small without touching the disk:
// it serves each partition of a source as a raw stream in which the blocks
// the filesystem has not allocated read as zeros.
//
// Exit codes: 0 success; 1 warning (borg's warning code, passed through);
// 2 error, including bad arguments; 130 interrupted.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/prezero/prezero/borg"
	"github.com/prezero/prezero/internal/restore"
)

// command is one subcommand. Each lives in its own cmd_NAME.go and adds
// itself to commands from an init function.
type command struct {
	name  string
	usage string // arguments, after "prezero NAME"
	short string // one line for the command list
	long  string // shown by "prezero NAME --help"
	flags func(*pflag.FlagSet)
	run   func(ctx context.Context, args []string) error
}

var commands = map[string]*command{}

func register(c *command) { commands[c.name] = c }

// exitError carries a specific exit code, such as borg's.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// usageError is a mistake in the command line: exit code 2 with a hint.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return &usageError{fmt.Sprintf(format, a...)} }

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		printUsage(os.Stdout)
		return 0
	}
	if args[0] == "--version" || args[0] == "version" {
		fmt.Println("prezero", version)
		return 0
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(os.Stderr, "prezero: unknown command %q\n\n", args[0])
		printUsage(os.Stderr)
		return 2
	}
	fs := pflag.NewFlagSet("prezero "+c.name, pflag.ContinueOnError)
	fs.SortFlags = false
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "Usage: prezero %s %s\n\n%s\n\nOptions:\n%s", c.name, c.usage, c.long, fs.FlagUsages())
	}
	if c.flags != nil {
		c.flags(fs)
	}
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(os.Stderr, "prezero %s: %v\n", c.name, err)
		return 2
	}

	applyMemoryLimit()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := c.run(ctx, fs.Args())
	return exitCode(c.name, err, ctx)
}

// exitCode reports err and maps it to the process exit code.
func exitCode(name string, err error, ctx context.Context) int {
	if err == nil {
		return 0
	}
	var ee *exitError
	var ue *usageError
	switch {
	case errors.As(err, &ue):
		fmt.Fprintf(os.Stderr, "prezero %s: %v\nRun 'prezero %s --help' for usage.\n", name, err, name)
		return 2
	case errors.As(err, &ee):
		if ee.err != nil && ee.code != 0 {
			fmt.Fprintf(os.Stderr, "prezero %s: %v\n", name, ee.err)
		}
		return ee.code
	case ctx.Err() != nil:
		fmt.Fprintf(os.Stderr, "prezero %s: interrupted: %v\n", name, err)
		return 130
	}
	fmt.Fprintf(os.Stderr, "prezero %s: %v%s\n", name, err, advice(err))
	return 2
}

// advice is what the CLI adds to a library's reason: the flags that
// libraries do not know about.
func advice(err error) string {
	switch {
	case errors.Is(err, borg.ErrNotFound):
		return ", or pass --borg PATH"
	case errors.Is(err, restore.ErrExtended):
		return "; restore one partition with --path partN.img"
	}
	return ""
}

func printUsage(w *os.File) {
	fmt.Fprintln(w, "prezero serves disk images with unallocated blocks as zeros, for small backups.")
	fmt.Fprintln(w, "\nUsage: prezero COMMAND [OPTIONS] ARGS\n\nCommands:")
	var names []string
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-8s %s\n", n, commands[n].short)
	}
	fmt.Fprintln(w, "\nRun 'prezero COMMAND --help' for a command's options.")
	fmt.Fprintln(w, "Exit codes: 0 success, 1 warning (from borg), 2 error, 130 interrupted.")
}

const version = "0.1.0"
