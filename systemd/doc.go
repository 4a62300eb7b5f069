// Package systemd holds the user unit templates of the daemons. They are
// embedded so the runner renders exactly the files in this folder; each
// daemon's templates and their embed directive live in that daemon's file.
package systemd
