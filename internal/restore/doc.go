// Package restore is the reverse path of prezero's pipeline: it writes a
// stream (as "prezero cat", the FUSE mount or "borg extract --stdout" produce
// it) back to a regular file or a block device, so that runs of zero blocks
// cost almost nothing: they become holes in a file, and BLKZEROOUT (or
// fallocate ZERO_RANGE) calls on a device.
//
// Rules:
//   - The result is exactly the stream: every byte of the target up to the
//     stream's length equals the stream; no stale byte survives a zero run.
//     A regular-file target ends at the stream's length.
//   - A stream longer than a block device is refused before anything is
//     written, so its length must be known first (see Writer.Limit).
//   - A mounted target is always refused; one merely in use only without force.
//     Package inuse decides both (inuse.Check with inuse.Any; inuse.Stacked,
//     inuse.Loops), the same code that guards a source before it is read.
//
// Run is the whole restore as the CLI does it: open the target, check the
// stream's length against it before the first write, refuse an empty pipe,
// write, finish, and ask the kernel to re-read a restored disk's partition
// table. The CLI only parses flags, finds the stream (a file, standard
// input, or borg extract through an Archive) and prints Run's Summary.
//
// It reads plain bytes and knows nothing of filesystems, so it does not
// import source. It reads partition tables only to put a --partitions
// archive (header.img + partN.img) back together on a whole disk (disk.go).
package restore
