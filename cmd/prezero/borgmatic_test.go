package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prezero/prezero/internal/imgtest"
)

// borgmaticConfig returns examples/borgmatic-prezero.yaml with its image,
// mount point, repository and prezero command replaced for this test.
func borgmaticConfig(t *testing.T, img, mnt, repo string) string {
	t.Helper()
	b := readFile(t, filepath.Join("..", "..", "examples", "borgmatic-prezero.yaml"))
	s := string(b)
	for _, r := range [][2]string{
		{"/var/lib/libvirt/images/vm1.qcow2", img},
		{"/run/prezero/vm1", mnt},
		{"/backup/vm-repo", repo},
		{"prezero mount ", prezeroBin(t) + " mount "},
		{"prezero umount ", prezeroBin(t) + " umount "},
	} {
		if !strings.Contains(s, r[0]) {
			t.Fatalf("the example config no longer contains %q", r[0])
		}
		s = strings.ReplaceAll(s, r[0], r[1])
	}
	cfg := filepath.Join(t.TempDir(), "borgmatic.yaml")
	writeFile(t, cfg, []byte(s))
	return cfg
}

// TestBorgmaticExample runs the example borgmatic configuration with the
// real borgmatic (Debian's 1.7): the archive's disk.img equals prezero cat
// of the qcow2, and no mount or server is left, after success or after a
// borg failure.
func TestBorgmaticExample(t *testing.T) {
	f := images(t)
	imgtest.Need(t, "borgmatic", "borg", "fusermount3", "mountpoint")
	img := f.variants["qcow2"]
	b, repo, env := borgRepo(t, "borg")
	mnt := filepath.Join(t.TempDir(), "mnt")
	t.Cleanup(func() {
		if mountedAt(t, mnt) != "" {
			pz(t, nil, "umount", "--lazy", mnt)
		}
	})

	run := func(cfg string) (string, error) {
		cmd := exec.Command("borgmatic", "--config", cfg, "--verbosity", "1", "create")
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := run(borgmaticConfig(t, img, mnt, repo))
	if err != nil {
		t.Fatalf("borgmatic: %v\n%s", err, out)
	}
	if mountedAt(t, mnt) != "" {
		t.Fatalf("%s still mounted after borgmatic", mnt)
	}
	noQemuNbd(t, img)
	list := runEnv(t, env, b.Path, "list", "--short", repo)
	archives := strings.Fields(list)
	if len(archives) != 1 || !strings.HasPrefix(archives[0], "vm1-") {
		t.Fatalf("archives: %q", list)
	}
	got := readFile(t, extract(t, b, env, repo, archives[0], "disk.img"))
	want := readFile(t, catFile(t, img, "disk"))
	if i := firstDiff(got, want); i >= 0 {
		t.Fatalf("disk.img in the archive differs from prezero cat at byte %d", i)
	}
	// borg stored the holes as holes: sparse-aware, not read.
	files := runEnv(t, env, b.Path, "list", "--format", "{path} {size}{NL}", repo+"::"+archives[0])
	if !strings.Contains(files, "disk.img ") {
		t.Fatalf("archive files: %s", files)
	}

	// borg fails (no repository there): on_error unmounts.
	bad := borgmaticConfig(t, img, mnt, filepath.Join(t.TempDir(), "no-repo"))
	out, err = run(bad)
	if err == nil {
		t.Fatalf("borgmatic succeeded without a repository:\n%s", out)
	}
	if !strings.Contains(out, "no-repo") {
		t.Fatalf("borgmatic's output does not show borg's failure:\n%s", out)
	}
	if mountedAt(t, mnt) != "" {
		t.Fatalf("%s still mounted after a failing borg:\n%s", mnt, out)
	}
	noQemuNbd(t, img)
	if pids := serverPIDs(mnt); len(pids) != 0 {
		t.Fatalf("mount servers left: %v", pids)
	}
}
