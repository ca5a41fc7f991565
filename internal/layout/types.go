package layout

// gptTypes names common GPT partition type GUIDs, as sfdisk spells them.
var gptTypes = map[string]string{
	"0FC63DAF-8483-4772-8E79-3D69D8477DE4": "Linux filesystem",
	"C12A7328-F81F-11D2-BA4B-00A0C93EC93B": "EFI System",
	"EBD0A0A2-B9E5-4433-87C0-68B6B72699C7": "Microsoft basic data",
	"E3C9E316-0B5C-4DB8-817D-F92DF00215AE": "Microsoft reserved",
	"DE94BBA4-06D1-4D40-A16A-BFD50179D6AC": "Windows recovery",
	"0657FD6D-A4AB-43C4-84E5-0933C84B4F4F": "Linux swap",
	"E6D6D379-F507-44C2-A23C-238F2A3DF928": "Linux LVM",
	"A19D880F-05FC-4D3B-A006-743F0F84911E": "Linux RAID",
	"4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709": "Linux root (x86-64)",
	"933AC7E1-2EB4-4F13-B844-0E14E2AEF915": "Linux home",
	"21686148-6449-6E6F-744E-656564454649": "BIOS boot",
}

// gptTypeName names a GPT partition type GUID, or returns "".
func gptTypeName(guid string) string { return gptTypes[guid] }

// mbrTypeName names common MBR partition types.
func mbrTypeName(t byte) string {
	switch t {
	case 0x05, 0x0F, 0x85:
		return "extended"
	case 0x07:
		return "NTFS/exFAT"
	case 0x0B, 0x0C:
		return "FAT32"
	case 0x06, 0x0E:
		return "FAT16"
	case 0x82:
		return "Linux swap"
	case 0x83:
		return "Linux"
	case 0x8E:
		return "Linux LVM"
	case 0xEF:
		return "EFI System"
	case 0xFD:
		return "Linux RAID"
	}
	return ""
}
