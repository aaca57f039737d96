package audit

import (
	"os"
	"os/user"
	"strconv"
)

// Hostname is the host name entries carry as their writer ("unknown"
// when the system does not say).
func Hostname() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "unknown"
	}
	return h
}

// OSUser is who runs a command line: the user name, else "uid:<n>" when
// the user database does not know the uid (a container's arbitrary uid).
func OSUser() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	return "uid:" + strconv.Itoa(os.Getuid())
}
