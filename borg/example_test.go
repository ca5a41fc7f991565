package borg_test

import (
	"fmt"
	"log"

	"github.com/prezero/prezero/borg"
)

// prezero speaks REPO::ARCHIVE to every borg; the arguments follow the
// version Find detected: borg 1 takes REPO::ARCHIVE, borg 2 -r REPO.
func Example() {
	ref, err := borg.ParseRef("/backup/repo::sdb-2026-12-05")
	if err != nil {
		log.Fatal(err)
	}
	flags := []string{"--read-special", "--sparse"}
	for _, b := range []*borg.Borg{{Path: "borg", Major: 1}, {Path: "borg2", Major: 2}} {
		fmt.Println(b.Path, b.CreateArgs(ref, flags, []string{"--stats"}, []string{"disk.img"}))
		fmt.Println(b.Path, b.ExtractStdoutArgs(ref, "disk.img"))
	}
	// Output:
	// borg [create --read-special --sparse --stats /backup/repo::sdb-2026-12-05 disk.img]
	// borg [extract --stdout /backup/repo::sdb-2026-12-05 disk.img]
	// borg2 [-r /backup/repo create --read-special --sparse --stats sdb-2026-12-05 disk.img]
	// borg2 [-r /backup/repo extract --stdout sdb-2026-12-05 disk.img]
}
