// Command mutate checks that the tests catch what they claim: it applies
// each one-line mutant of mutants.tsv, one at a time, to a copy of the
// committed tree (git archive HEAD in a temporary directory), runs the
// tests that should catch it, and reports the mutants that survive (a
// surviving mutant is a bug in the tests). Run it with `make mutate`; it is
// not part of make test.
//
// Arguments select mutants: a number picks that line of the list (1 is the
// first mutant), anything else is a regular expression matched against the
// mutant's file and package ("worker/", "internal/api"). Without arguments
// every mutant runs (`make mutate MUTANTS='internal/api 3'` passes them).
//
// mutants.tsv has one mutant a line, tab-separated: file, the exact text to
// replace (it must occur once), its replacement, the package, and the -run
// pattern of the tests that should catch it. "\t" and "\n" in the texts
// stand for a tab and a newline; lines starting with # are comments.
package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

func main() { os.Exit(run()) }

type mutant struct {
	n                          int // position in the list, from 1
	file, old, new, pkg, tests string
}

func run() int {
	began := time.Now()
	all, err := readMutants("internal/mutate/mutants.tsv")
	if err != nil {
		fmt.Fprintln(os.Stderr, "mutate:", err)
		return 2
	}
	list, err := selectMutants(all, os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "mutate:", err)
		return 2
	}
	dir, err := os.MkdirTemp("", "otpq-mutate-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "mutate:", err)
		return 2
	}
	defer os.RemoveAll(dir)
	if out, err := exec.Command("sh", "-c", "git archive HEAD | tar -x -C "+dir).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "mutate: copying the tree: %v\n%s", err, out)
		return 2
	}
	// Baseline: the tests must pass on the unmutated copy, or a "killed"
	// would mean nothing. One run per package, of every selected mutant's
	// tests.
	for _, b := range baselines(list) {
		if out, err := goTest(dir, b); err != nil {
			fmt.Fprintf(os.Stderr, "mutate: %s -run %q fails without any mutant:\n%s", b.pkg, b.tests, out)
			return 2
		}
	}
	killed, survived, broken := 0, 0, 0
	for _, m := range list {
		path := filepath.Join(dir, m.file)
		orig, err := os.ReadFile(path)
		if err != nil || strings.Count(string(orig), m.old) != 1 {
			fmt.Printf("%2d NOT APPLIED  %s: %q does not occur exactly once\n", m.n, m.file, m.old)
			broken++
			continue
		}
		if err := os.WriteFile(path, []byte(strings.Replace(string(orig), m.old, m.new, 1)), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "mutate:", err)
			return 2
		}
		out, err := goTest(dir, m)
		_ = os.WriteFile(path, orig, 0o644)
		switch {
		case err == nil:
			fmt.Printf("%2d SURVIVED     %s: %q -> %q (%s)\n", m.n, m.file, m.old, m.new, m.tests)
			survived++
		case strings.Contains(string(out), "build failed") || strings.Contains(string(out), "[setup failed]"):
			fmt.Printf("%2d DOES NOT BUILD %s: %q -> %q\n", m.n, m.file, m.old, m.new)
			broken++
		default:
			fmt.Printf("%2d killed       %s: %q\n", m.n, m.file, m.old)
			killed++
		}
	}
	fmt.Printf("mutate: %d/%d killed, %d survived, %d not applied or not building (%d mutants listed; %s)\n",
		killed, len(list), survived, broken, len(all), time.Since(began).Round(time.Second))
	if survived+broken > 0 {
		return 1
	}
	return 0
}

// selectMutants is the mutants args pick (see the package documentation),
// in list order; all of them without args.
func selectMutants(all []mutant, args []string) ([]mutant, error) {
	if len(args) == 0 {
		return all, nil
	}
	var nums []int
	var res []*regexp.Regexp
	for _, a := range args {
		if n, err := strconv.Atoi(a); err == nil {
			if n < 1 || n > len(all) {
				return nil, fmt.Errorf("mutant %d: the list has %d", n, len(all))
			}
			nums = append(nums, n)
			continue
		}
		re, err := regexp.Compile(a)
		if err != nil {
			return nil, fmt.Errorf("selection %q: %w", a, err)
		}
		res = append(res, re)
	}
	var list []mutant
	for _, m := range all {
		if slices.Contains(nums, m.n) || slices.ContainsFunc(res, func(re *regexp.Regexp) bool {
			return re.MatchString(m.file) || re.MatchString(m.pkg)
		}) {
			list = append(list, m)
		}
	}
	if len(list) == 0 {
		return nil, fmt.Errorf("no mutant matches %q", args)
	}
	return list, nil
}

// baselines is one test run per package of list: the union of its mutants'
// -run patterns.
func baselines(list []mutant) []mutant {
	var out []mutant
	at := map[string]int{}
	for _, m := range list {
		i, ok := at[m.pkg]
		if !ok {
			at[m.pkg] = len(out)
			out = append(out, mutant{pkg: m.pkg, tests: m.tests})
			continue
		}
		if !slices.Contains(strings.Split(out[i].tests, "|"), m.tests) {
			out[i].tests += "|" + m.tests
		}
	}
	return out
}

// goTest runs the tests that should catch m in the tree at dir.
func goTest(dir string, m mutant) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "test", "-count=1", "-run", m.tests, "./"+m.pkg+"/")
	cmd.Dir = dir
	return cmd.CombinedOutput()
}

func readMutants(name string) ([]mutant, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	unescape := strings.NewReplacer(`\t`, "\t", `\n`, "\n").Replace
	var list []mutant
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Split(line, "\t")
		if len(f) != 5 {
			return nil, fmt.Errorf("%s:%d: want 5 tab-separated fields, got %d", name, n, len(f))
		}
		list = append(list, mutant{len(list) + 1, f[0], unescape(f[1]), unescape(f[2]), f[3], f[4]})
	}
	return list, sc.Err()
}
