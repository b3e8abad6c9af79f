package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime/debug"
)

// errUsage: the command line was wrong; the usage was printed. main exits 2.
var errUsage = errors.New("wrong usage")

// usageError prints usage on stderr and returns errUsage.
func usageError(usage string) error {
	fmt.Fprintln(os.Stderr, usage)
	return errUsage
}

// unknownCommand names the unknown command in one line.
func unknownCommand(group, name string) error {
	help := "tokenledger --help"
	if group != "tokenledger" {
		help = "tokenledger " + group + " --help"
	}
	return fmt.Errorf("unknown %s command %q (%s lists them): %w", group, name, help, errUsage)
}

// isHelp reports whether arg asks for help.
func isHelp(arg string) bool {
	switch arg {
	case "-h", "-help", "--help", "help":
		return true
	}
	return false
}

// newFlagSet is a flag set whose -h prints what the command does and its
// flags; parseFlags returns flag.ErrHelp after it, and main exits 0.
func newFlagSet(name, doc string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: tokenledger %s [flags]\n\n%s\n\nEvery flag also reads TOKENLEDGER_<FLAG> (upper case, - as _).\n\nflags:\n", name, doc)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlagsExcept is parseFlags, but the flags named in cmdlineOnly are
// taken from the command line only, never from the environment or a
// config file.
func parseFlagsExcept(fs *flag.FlagSet, args []string, cmdlineOnly ...string) (configFile, error) {
	if err := fs.Parse(args); err != nil {
		return configFile{}, err
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	cf, err := parseFlags(fs, args)
	if err != nil {
		return cf, err
	}
	for _, name := range cmdlineOnly {
		if f := fs.Lookup(name); f != nil && !given[name] {
			if err := f.Value.Set(f.DefValue); err != nil {
				return cf, err
			}
		}
	}
	return cf, nil
}

// version is the module's version and VCS revision, as the build recorded
// them.
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "tokenledger (unknown version)"
	}
	v := bi.Main.Version
	if v == "" || v == "(devel)" {
		v = "devel"
	}
	var rev, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = "+dirty"
			}
		}
	}
	if rev != "" {
		v += " " + rev[:min(12, len(rev))] + modified
	}
	return "tokenledger " + v + " " + bi.GoVersion
}
