package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/spf13/pflag"

	"github.com/prezero/prezero/internal/imgtest"
)

// The small fixture of the CLI tests: a 12 MiB GPT disk, random-filled,
// with an ext4 partition (1 MiB at 1 MiB... 7 MiB) and a raw one that
// passes through, backed up as disk.img ("whole") and with --partitions
// ("parts") into a repokey-encrypted borg 1 repository (passphrase
// cliPass).
const (
	cliDiskSize = 12 << 20
	cliExtStart = 1 << 20
	cliExtSize  = 6 << 20
	cliRawStart = 7 << 20
	cliRawSize  = 3 << 20
	cliPass     = "correct horse"
)

type cliFixture struct {
	img  string
	repo string
	base string // BORG_BASE_DIR
}

var (
	cliOnce sync.Once
	cliFix  *cliFixture
)

func smallFix(t *testing.T) *cliFixture {
	t.Helper()
	imgtest.NeedRoot(t)
	imgtest.Need(t, "borg", "sfdisk", "mkfs.ext4", "debugfs")
	cliOnce.Do(func() {
		dir := filepath.Join(filepath.Dir(prezeroBin(t)), "cli")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		f := &cliFixture{img: filepath.Join(dir, "disk.img"), repo: filepath.Join(dir, "repo"), base: filepath.Join(dir, "borg-base")}
		imgtest.RandomFile(t, f.img, cliDiskSize)
		imgtest.Partition(t, f.img, 512, fmt.Sprintf("label: gpt\nstart=%d,size=%d,type=L\nstart=%d,size=%d,type=L\n",
			cliExtStart/512, cliExtSize/512, cliRawStart/512, cliRawSize/512))
		ext := filepath.Join(t.TempDir(), "ext.img")
		imgtest.Ext(t, ext, cliExtSize)
		imgtest.WriteAt(t, f.img, cliExtStart, ext)
		env := f.env(true)
		runEnv(t, env, "borg", "init", "-e", "repokey", f.repo)
		for _, args := range [][]string{{f.img, f.repo + "::whole"}, {"--partitions", f.img, f.repo + "::parts"}} {
			if _, e, code := pz(t, env, append([]string{"backup"}, args...)...); code != 0 {
				t.Fatalf("backup %q: %d\n%s", args, code, e)
			}
		}
		cliFix = f
	})
	if cliFix == nil {
		t.Fatal("the CLI fixture could not be built: see the first test that needed it")
	}
	return cliFix
}

// env is the borg environment of the fixture, with or without the
// passphrase.
func (f *cliFixture) env(pass bool) []string {
	env := []string{"BORG_BASE_DIR=" + f.base, "BORG_RELOCATED_REPO_ACCESS_IS_OK=yes", "LC_ALL=C"}
	if pass {
		env = append(env, "BORG_PASSPHRASE="+cliPass)
	}
	return env
}

// envWithout is os.Environ() without the passphrase variables, plus env.
func envWithout(env []string) []string {
	var out []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "BORG_PASS") {
			out = append(out, e)
		}
	}
	return append(out, env...)
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}

// Issue 9, item 12: help on stdout when asked for, the subcommand's help
// for "help CMD", on stderr only with a usage error; plain boolean flags.
func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"help", "map"}, {"map", "--help"}, {"map", "-h"}} {
		o, e, code := runPrezero(t, args...)
		if code != 0 || !strings.HasPrefix(string(o), "Usage: prezero map SOURCE") || len(e) != 0 {
			t.Errorf("prezero %q: exit %d, stdout %q, stderr %q", args, code, o, e)
		}
		if bytes.Contains(o, []byte("[=true|false]")) || !bytes.Contains(o, []byte("--json ")) {
			t.Errorf("prezero %q: boolean flags are not shown plainly:\n%s", args, o)
		}
	}
	o, e, code := runPrezero(t, "map", "--no-such-flag", "x")
	if code != 2 || len(o) != 0 || !strings.Contains(string(e), "Usage: prezero map") || !strings.Contains(lastLine(string(e)), "unknown flag: --no-such-flag") {
		t.Errorf("usage error: exit %d, stdout %q, stderr %q", code, o, e)
	}
	if _, e, code := runPrezero(t, "help", "frobnicate"); code != 2 || !strings.Contains(string(e), `unknown command "frobnicate"`) {
		t.Errorf("help of an unknown command: exit %d, %s", code, e)
	}
	// The --expect-size help says when a pipe's length is known (item 3).
	o, _, _ = runPrezero(t, "help", "restore")
	if !strings.Contains(string(o), "known only at its end") || !strings.Contains(string(o), "--from checks the size before the first write") {
		t.Errorf("restore help does not explain --expect-size on a pipe:\n%s", o)
	}
}

// Issue 9, item 10: borg's own flags before "--" get a hint.
func TestBackupBorgFlagHint(t *testing.T) {
	for _, flag := range []string{"--stats", "--progress", "--json", "-v"} {
		_, e, code := runPrezero(t, "backup", flag, "disk.img", "repo::a")
		want := "borg's options go after --: prezero backup SOURCE REPO::ARCHIVE -- " + flag
		if code != 2 || !strings.Contains(lastLine(string(e)), want) {
			t.Errorf("backup %s: exit %d, last line %q; want %q", flag, code, lastLine(string(e)), want)
		}
	}
}

// Issue 9, item 13: one clear line for a missing source, a character
// device, and an unreadable block device.
func TestSourceMessages(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.img")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"map", missing}, missing + " does not exist"},
		{[]string{"cat", missing}, missing + " does not exist"},
		{[]string{"mount", missing, t.TempDir()}, missing + " does not exist"},
		{[]string{"mount", "-f", missing, t.TempDir()}, missing + " does not exist"},
		{[]string{"backup", missing, "repo::a"}, missing + " does not exist"},
		{[]string{"cat", "/dev/null"}, "/dev/null is a character device, not a disk or image"},
		{[]string{"backup", "/dev/null", "repo::a"}, "/dev/null is a character device, not a disk or image"},
		{[]string{"map", "/dev/null"}, "/dev/null is a character device, not a disk or image"},
		{[]string{"mount", "/dev/null", t.TempDir()}, "/dev/null is a character device, not a disk or image"},
		{[]string{"restore", "--input", missing + "x", "/dev/null"}, "no such file"},
	} {
		_, e, code := runPrezero(t, c.args...)
		if code != 2 || strings.Count(strings.TrimSpace(string(e)), "\n") != 0 || !strings.Contains(string(e), c.want) {
			t.Errorf("prezero %q: exit %d, stderr %q; want one line with %q", c.args, code, e, c.want)
		}
	}
	in := filepath.Join(t.TempDir(), "in.img")
	writeFile(t, in, []byte("data"))
	if _, e, _ := runPrezero(t, "restore", "--input", in, "/dev/null"); !strings.Contains(string(e), "/dev/null is a character device, not a disk or image") {
		t.Errorf("restore onto /dev/null: %s", e)
	}

	// A block device a normal user may not read: say to run as root or
	// join the group, and nothing about it being mounted.
	imgtest.NeedRoot(t)
	backing := filepath.Join(t.TempDir(), "dev.img")
	imgtest.RandomFile(t, backing, 1<<20)
	dev := strings.TrimSpace(imgtest.Run(t, "losetup", "-f", "--show", backing))
	t.Cleanup(func() { imgtest.Detach(t, dev, backing) })
	os.Chmod(dev, 0o660)
	os.Chown(dev, 0, 6) // group disk on Debian
	bin := filepath.Join(publicDir(t), "prezero")
	imgtest.CopyFile(t, bin, prezeroBin(t))
	os.Chmod(bin, 0o755)
	cmd := exec.Command(bin, "map", dev)
	cmd.SysProcAttr = as(65534, 65534)
	out, _ := cmd.CombinedOutput()
	if s := string(out); !strings.Contains(s, "permission denied") || !strings.Contains(s, "run prezero as root") ||
		!strings.Contains(s, `join the "disk" group`) || strings.Count(strings.TrimSpace(s), "\n") != 0 {
		t.Errorf("map %s as nobody:\n%s", dev, s)
	}
}

// Issue 9, items 11 and 13: a borg 2 repository with borg 1 (and the
// reverse) suggests --borg; borg 2 errors name borg2; borg command lines in
// messages are shell-quoted.
func TestBorgVersionMessages(t *testing.T) {
	_, repo2, env2 := borgRepo(t, "borg2")
	_, repo1, env1 := borgRepo(t, "borg")
	out := filepath.Join(t.TempDir(), "out.img")
	for _, c := range []struct {
		env  []string
		args []string
		want []string
	}{
		{env2, []string{"restore", "--from", repo2 + "::a", out}, []string{"borg 2 repository", "pass --borg borg2", "nothing was written"}},
		{env1, []string{"restore", "--borg", "borg2", "--from", repo1 + "::a", out}, []string{"borg 1 repository", "pass --borg borg"}},
		{env2, []string{"restore", "--borg", "borg2", "--from", repo2 + "::no such", out}, []string{"borg2 -r " + repo2 + " list --format '{size} {path}{NL}' 'no such' exited with code"}},
		{env1, []string{"restore", "--from", repo1 + "::no such", out}, []string{"borg list --format '{size} {path}{NL}' '" + repo1 + "::no such' exited with code 2"}},
	} {
		_, e, code := pz(t, c.env, c.args...)
		for _, w := range c.want {
			if code != 2 || !strings.Contains(e, w) {
				t.Errorf("prezero %q: exit %d, stderr:\n%s\nwant %q", c.args, code, e, w)
			}
		}
	}
	if _, err := os.Stat(out); err == nil {
		t.Error("a refused restore created its target")
	}
	// backup of a real source into the borg 2 repository with borg 1
	img := filepath.Join(t.TempDir(), "ext.img")
	imgtest.Ext(t, img, 8<<20)
	tmp := t.TempDir()
	_, e, code := pz(t, append(env2, "TMPDIR="+tmp), "backup", img, repo2+"::a")
	if code != 2 || !strings.Contains(e, "pass --borg borg2") || strings.Contains(e, "not supported by this borg version") {
		t.Errorf("backup into a borg 2 repository with borg 1: exit %d\n%s", code, e)
	}
	if m := mountsUnder(t, tmp); len(m) > 0 {
		t.Errorf("mounts left behind: %v", m)
	}
}

// Issue 9, item 3: a pipe longer than --expect-size says exactly what was
// overwritten and what to do.
func TestExpectSizeTooSmall(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out.img")
	data := bytes.Repeat([]byte("prezero!"), 3<<17) // 3 MiB
	cmd := exec.Command(prezeroBin(t), "restore", "--expect-size", "1mib", out)
	cmd.Stdin = io.MultiReader(bytes.NewReader(data)) // a pipe, not a file
	var e bytes.Buffer
	cmd.Stderr = &e
	err := cmd.Run()
	msg := e.String()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
		t.Fatalf("exit %v\n%s", err, msg)
	}
	for _, w := range []string{"longer than --expect-size 1048576", "the first 1048576 bytes of " + out + " were overwritten", "--from"} {
		if !strings.Contains(msg, w) {
			t.Errorf("message lacks %q:\n%s", w, msg)
		}
	}
	if strings.Contains(msg, "run the restore again") {
		t.Errorf("the message gives advice that cannot succeed:\n%s", msg)
	}
	if got := readFile(t, out); !bytes.Equal(got, data[:1<<20]) {
		t.Errorf("the target holds %d bytes, not the stream's first 1 MiB", len(got))
	}
}

// Issue 9, item 9: "borg extract --stdout | prezero restore DEVICE" refused:
// prezero's message is the last thing on the terminal, with no borg
// BrokenPipeError traceback. Both through pipes and on a pseudo-terminal,
// where prezero also says that it reads the rest of the pipe.
func TestPipeRefusalIsLast(t *testing.T) {
	f := smallFix(t)
	imgtest.Need(t, "losetup")
	backing := filepath.Join(t.TempDir(), "dev.img")
	imgtest.ZeroFile(t, backing, 16<<20)
	before := imgtest.SHA256File(t, backing)
	dev := strings.TrimSpace(imgtest.Run(t, "losetup", "-f", "--show", backing))
	t.Cleanup(func() { imgtest.Detach(t, dev, backing) })
	script := fmt.Sprintf("borg extract --stdout %s::whole disk.img | %s restore %s", f.repo, prezeroBin(t), dev)
	for _, terminal := range []bool{false, true} {
		t.Run(map[bool]string{false: "pipes", true: "terminal"}[terminal], func(t *testing.T) {
			cmd := exec.Command("sh", "-c", script)
			cmd.Env = envWithout(f.env(true))
			var s string
			var err error
			if terminal {
				s, _, err = onTerminal(t, cmd, nil, "")
				s = strings.ReplaceAll(s, "\r\n", "\n")
			} else {
				var out []byte
				out, err = cmd.CombinedOutput()
				s = string(out)
			}
			if err == nil || strings.Contains(s, "BrokenPipeError") || strings.Contains(s, "Traceback") {
				t.Fatalf("%s: %v\n%s", script, err, s)
			}
			if last := lastLine(s); !strings.HasPrefix(last, "prezero restore: ") || !strings.Contains(last, "--expect-size") {
				t.Errorf("the last line is not prezero's refusal: %q\n%s", last, s)
			}
			if terminal && !strings.Contains(s, "reading the rest of standard input") {
				t.Errorf("prezero did not say why it waits:\n%s", s)
			}
			if imgtest.SHA256File(t, backing) != before {
				t.Error("the refused device changed")
			}
		})
	}
}

// Issue 9, item 5: nothing zeroed warns with the reasons, or fails with
// --require-zeroing; map ends with a summary of pass-through partitions.
func TestNothingZeroed(t *testing.T) {
	f := smallFix(t)
	text := filepath.Join(t.TempDir(), "notes.txt")
	writeFile(t, text, bytes.Repeat([]byte("just some text\n"), 1000))
	env := f.env(true)
	_, e, code := pz(t, env, "backup", text, f.repo+"::text")
	if code != 0 || !strings.Contains(e, "warning: nothing of "+text+" would be zeroed") || !strings.Contains(e, "part1: no supported filesystem") {
		t.Errorf("backup of a text file: exit %d\n%s", code, e)
	}
	_, e, code = pz(t, env, "backup", "--require-zeroing", text, f.repo+"::text2")
	if code != 2 || !strings.Contains(e, "--require-zeroing") || !strings.Contains(e, "no supported filesystem") {
		t.Errorf("backup --require-zeroing of a text file: exit %d\n%s", code, e)
	}
	if o := runEnv(t, env, "borg", "list", "--short", f.repo); strings.Contains(o, "text2") {
		t.Error("--require-zeroing stored an archive")
	}
	// The disk has a zeroed ext4: no warning, and --require-zeroing passes.
	_, e, code = pz(t, env, "backup", "--require-zeroing", f.img, f.repo+"::zeroed")
	if code != 0 || strings.Contains(e, "warning") {
		t.Errorf("backup --require-zeroing of a disk with ext4: exit %d\n%s", code, e)
	}
	o, _, code := pz(t, nil, "map", f.img)
	if last := lastLine(o); code != 0 || !strings.HasPrefix(last, "warning: 1 of 2 partitions pass through unchanged (part2)") {
		t.Errorf("map does not end with the pass-through summary: %q\n%s", last, o)
	}
}

// Issue 9, items 5 and 6: a truncated image. map ends with the summary of
// what passes through, and the rows say why; backup warns with the same
// reasons (and --require-zeroing refuses); header.img is the bytes before
// the first partition, not the whole source.
func TestTruncatedImage(t *testing.T) {
	f := smallFix(t)
	img := filepath.Join(t.TempDir(), "cut.img")
	imgtest.CopyFile(t, img, f.img)
	const cut = cliExtStart + 2<<20 // inside the ext4 partition
	if err := os.Truncate(img, cut); err != nil {
		t.Fatal(err)
	}
	o, e, code := pz(t, nil, "map", img)
	if last := lastLine(o); code != 0 || !strings.HasPrefix(last, "warning: 2 of 2 partitions pass through unchanged (part1, part2)") {
		t.Errorf("map of a truncated image: exit %d, last line %q\n%s%s", code, last, o, e)
	}
	if !strings.Contains(o, "past the end of the source") {
		t.Errorf("map does not say the partitions are cut off:\n%s", o)
	}
	env := f.env(true)
	_, e, code = pz(t, env, "backup", img, f.repo+"::cut")
	if code != 0 || !strings.Contains(e, "warning: nothing of "+img+" would be zeroed") || !strings.Contains(e, "part1: ") ||
		!strings.Contains(e, "past the end of the source") {
		t.Errorf("backup of a truncated image: exit %d\n%s", code, e)
	}
	_, e, code = pz(t, env, "backup", "--require-zeroing", "--partitions", img, f.repo+"::cut2")
	if code != 2 || !strings.Contains(e, "--require-zeroing") || !strings.Contains(e, "past the end of the source") {
		t.Errorf("backup --require-zeroing of a truncated image: exit %d\n%s", code, e)
	}
	header := readFile(t, catFile(t, img, "header"))
	if orig := readFile(t, img); len(header) != cliExtStart || !bytes.Equal(header, orig[:cliExtStart]) {
		t.Errorf("cat header of an image cut inside its first partition: %d bytes, want the %d before it", len(header), cliExtStart)
	}
	dir := t.TempDir()
	mountBG(t, img, dir)
	if fi, err := os.Stat(filepath.Join(dir, "header.img")); err != nil || fi.Size() != cliExtStart {
		t.Errorf("header.img of the truncated image: %v, %v; want %d bytes", fi, err, cliExtStart)
	}
}

// Issue 9, item 7: --chunker-params, --sparse and --read-special after --
// replace prezero's own, with borg and borg 2; buzhash is refused clearly.
func TestChunkerParamsAfterDash(t *testing.T) {
	img := filepath.Join(t.TempDir(), "ext.img")
	imgtest.Ext(t, img, 8<<20)
	want := imgtest.SHA256File(t, catFile(t, img, "disk"))
	for _, name := range []string{"borg", "borg2"} {
		t.Run(name, func(t *testing.T) {
			b, repo, env := borgRepo(t, name)
			_, e, code := pz(t, env, "backup", "--borg", name, img, repo+"::a", "--", "--chunker-params", "fixed,1048576", "--sparse", "--read-special")
			if code != 0 {
				t.Fatalf("backup with --chunker-params after --: exit %d\n%s", code, e)
			}
			if got := imgtest.SHA256File(t, extract(t, b, env, repo, "a", "disk.img")); got != want {
				t.Error("extracted disk.img differs from prezero cat")
			}
			for _, c := range []struct {
				args []string
				want string
			}{
				{[]string{"--", "--chunker-params", "buzhash,19,23,21,4095"}, "buzhash chunker"},
				{[]string{"--", "--chunker-params=19,23,21,4095"}, "buzhash chunker"},
				{[]string{"--hole-align", "4M", "--", "--chunker-params", "fixed,1048576"}, "--hole-align 4MiB does not match --chunker-params fixed,1048576"},
			} {
				args := append([]string{"backup", "--borg", name, img, repo + "::b"}, c.args...)
				if _, e, code := pz(t, env, args...); code != 2 || !strings.Contains(e, c.want) {
					t.Errorf("prezero %q: exit %d\n%s\nwant %q", args, code, e, c.want)
				}
			}
		})
	}
}

// The hole window follows a fixed chunk size given to borg.
func TestChunkerHoleAlign(t *testing.T) {
	for _, c := range []struct {
		flags, extra []string
		want         int64
		bad          bool
	}{
		{nil, nil, 4 << 20, false},
		{nil, []string{"--stats"}, 4 << 20, false},
		{[]string{"--hole-align", "2M"}, nil, 2 << 20, false},
		{nil, []string{"--chunker-params", "fixed,1048576"}, 1 << 20, false},
		{nil, []string{"--chunker-params=fixed,8388608"}, 8 << 20, false},
		{[]string{"--hole-align", "1MiB"}, []string{"--chunker-params", "fixed,1048576"}, 1 << 20, false},
		{[]string{"--hole-align", "2MiB"}, []string{"--chunker-params", "fixed,1048576"}, 0, true},
		{nil, []string{"--chunker-params", "fixed,1048576,4096"}, 0, true},
		{nil, []string{"--chunker-params", "default"}, 0, true},
	} {
		var opts backupOptions
		fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
		opts.AddFlags(fs)
		if err := fs.Parse(c.flags); err != nil {
			t.Fatal(err)
		}
		err := chunkerHoleAlign(&opts, c.extra)
		if (err != nil) != c.bad || (!c.bad && int64(opts.holeAlign) != c.want) {
			t.Errorf("%q -- %q: hole-align %d, err %v; want %d, bad=%v", c.flags, c.extra, opts.holeAlign, err, c.want, c.bad)
		}
	}
}

// Issue 9, item 8: restore --from an encrypted repository asks the
// passphrase once, whatever the number of borg runs, and no progress line
// is drawn over the prompt. Run through a pseudo-terminal, with borg
// (repokey) and borg 2 (repokey-aes-ocb).
func TestPassphraseAskedOnce(t *testing.T) {
	f := smallFix(t)
	// The borg 2 repository holds the fixture's disk as a --partitions
	// archive: restoring it with --disk runs borg2 four times.
	imgtest.Need(t, "borg2")
	_, repo2, env2 := borgRepoEncrypted(t, "borg2", "repokey-aes-ocb", "BORG_PASSPHRASE="+cliPass)
	if _, e, code := pz(t, env2, "backup", "--borg", "borg2", "--partitions", f.img, repo2+"::parts"); code != 0 {
		t.Fatalf("backup into the borg 2 repository: exit %d\n%s", code, e)
	}
	var env2NoPass []string
	for _, e := range env2 {
		if !strings.HasPrefix(e, "BORG_PASSPHRASE=") {
			env2NoPass = append(env2NoPass, e)
		}
	}
	for _, c := range []struct {
		name string
		env  []string
		args []string
	}{
		{"disk.img", f.env(false), []string{"--from", f.repo + "::whole"}},
		{"--partitions --disk", f.env(false), []string{"--from", f.repo + "::parts", "--disk"}},
		{"borg2 --partitions --disk", env2NoPass, []string{"--borg", "borg2", "--from", repo2 + "::parts", "--disk"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out.img")
			cmd := exec.Command(prezeroBin(t), append(append([]string{"restore"}, c.args...), out)...)
			cmd.Env = envWithout(c.env)
			s, prompts, err := onTerminal(t, cmd, regexp.MustCompile(`(?i)passphrase[^\n]*: $`), cliPass+"\n")
			if err != nil || prompts != 1 {
				t.Fatalf("exit %v, %d passphrase prompts (want 1):\n%q", err, prompts, s)
			}
			if i := strings.Index(strings.ToLower(s), "passphrase"); i >= 0 && strings.Contains(s[:i], "restoring") {
				t.Errorf("progress was drawn before the prompt:\n%q", s)
			}
			if imgtest.SHA256File(t, section(t, out, cliExtStart, cliExtSize)) != imgtest.SHA256File(t, catFile(t, f.img, "1")) {
				t.Error("the restored ext4 partition differs from prezero cat 1")
			}
		})
	}
}

// onTerminal runs cmd on a new pseudo-terminal, as its controlling
// terminal, and types answer after each prompt (a match at the end of the
// current line). It returns what the terminal showed, the number of
// prompts, and cmd's exit.
func onTerminal(t *testing.T, cmd *exec.Cmd, prompt *regexp.Regexp, answer string) (screen string, prompts int, err error) {
	t.Helper()
	ptmx, err := pty.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	defer ptmx.Close()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var buf bytes.Buffer
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		r := bufio.NewReader(ptmx)
		var line []byte
		for {
			b, err := r.ReadByte()
			if err != nil {
				return // EIO once every process has closed the terminal
			}
			buf.WriteByte(b)
			line = append(line, b)
			if b == '\n' || b == '\r' {
				line = line[:0]
				continue
			}
			if prompt != nil && prompt.Match(line) {
				prompts++
				line = line[:0]
				ptmx.Write([]byte(answer))
			}
		}
	}()
	// Generous: each borg run starts Python, and the test packages run in
	// parallel on two cores.
	const limit = 3 * time.Minute
	select {
	case err = <-done:
	case <-time.After(limit):
		cmd.Process.Signal(syscall.SIGKILL)
		<-done
		<-readDone
		t.Fatalf("%s did not finish in %v (waiting at a prompt?)\n%q", cmd.Args, limit, buf.String())
	}
	select {
	case <-readDone:
	case <-time.After(limit):
		t.Fatalf("the terminal of %s was not closed %v after it exited", cmd.Args, limit)
	}
	return buf.String(), prompts, err
}

// Issue 9, item 15: the README's set-up line runs as root as written and
// installs both borgs like .ci/run; it warns that disk.img and --partitions
// archives do not deduplicate against each other.
func TestReadmeSetup(t *testing.T) {
	readme := string(readFile(t, "../../README.md"))
	ci := string(readFile(t, "../../.ci/run"))
	var setup string
	lines := strings.Split(readme, "\n")
	for i, l := range lines {
		if strings.Contains(l, "apt-get install") {
			setup = l
			for strings.HasSuffix(setup, "\\") && i+1 < len(lines) { // continued
				i++
				setup = strings.TrimSuffix(setup, "\\") + " " + strings.TrimSpace(lines[i])
			}
			break
		}
	}
	if setup == "" {
		t.Fatal("no apt-get install line in the README")
	}
	if strings.HasPrefix(strings.TrimSpace(setup), "sudo ") {
		t.Errorf("the set-up line needs sudo, which a root shell may lack: %q", setup)
	}
	if !strings.Contains(readme, "As root") {
		t.Error("the README does not say the set-up runs as root")
	}
	for _, pkg := range []string{"borgbackup", "borgbackup2", "fuse3", "e2fsprogs", "ntfs-3g"} {
		if !regexp.MustCompile(`\s` + pkg + `(\s|$)`).MatchString(setup) {
			t.Errorf("the set-up line does not install %s", pkg)
		}
		if !regexp.MustCompile(`\s` + pkg + `(\s|$)`).MatchString(ci) {
			t.Errorf(".ci/run does not install %s", pkg)
		}
	}
	i := strings.Index(readme, "`--partitions` stores")
	if i < 0 || !strings.Contains(readme[i:], "do not deduplicate") || !strings.Contains(readme[i:], "1 MiB") {
		t.Error("the README does not say where --partitions is described that it does not deduplicate with disk.img archives")
	}
}
