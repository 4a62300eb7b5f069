package ocistate

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"terok.dev/sandbox/common/shieldbundle"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name, in, wantErr string
		pid               int
	}{
		{"full", `{"ociVersion":"1.0.2","id":"abc","status":"created","pid":42,"bundle":"/b","annotations":{"terok.shield.state_dir":"/s"}}`, "", 42},
		{"no annotations", `{"pid":7}`, "", 7},
		{"null annotations", `{"pid":7,"annotations":null}`, "", 7},
		{"empty", ``, "bad OCI state: EOF", 0},
		{"truncated", `{"pid":`, "bad OCI state", 0},
		{"array", `[]`, "OCI state must be a JSON object", 0},
		{"string", `"x"`, "OCI state must be a JSON object", 0},
		{"annotations list", `{"annotations":["a"]}`, "annotations must be a JSON object", 0},
		{"annotation not string", `{"annotations":{"a":1}}`, "bad OCI state", 0},
		{"pid string", `{"pid":"42"}`, "bad OCI state", 0},
		{"pid float", `{"pid":4.5}`, "bad OCI state", 0},
		{"pid negative", `{"pid":-3}`, "negative pid", 0},
		{"pid huge", `{"pid":1e99}`, "bad OCI state", 0},
		{"trailing", `{"pid":1} {"pid":2}`, "trailing data", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st, err := Parse([]byte(tc.in))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || st.Pid != tc.pid {
				t.Fatalf("got %+v, %v", st, err)
			}
		})
	}
}

func TestRead(t *testing.T) {
	big := strings.NewReader(strings.Repeat(" ", MaxStateSize+1))
	if _, err := Read(big); err == nil {
		t.Fatal("oversized state accepted")
	}
}

func TestStateDir(t *testing.T) {
	base := t.TempDir()
	good := filepath.Join(base, "good")
	_ = os.Mkdir(good, 0o700)
	ww := filepath.Join(base, "ww")
	_ = os.Mkdir(ww, 0o700)
	_ = os.Chmod(ww, 0o757)
	gw := filepath.Join(base, "gw")
	_ = os.Mkdir(gw, 0o700)
	_ = os.Chmod(gw, 0o770)
	link := filepath.Join(base, "link")
	_ = os.Symlink(good, link)
	file := filepath.Join(base, "file")
	_ = os.WriteFile(file, nil, 0o600)
	tests := []struct {
		name, dir, want, wantErr string
	}{
		{"good", good, good, ""},
		{"symlink resolved", link, good, ""},
		{"missing", "", "", "missing state_dir annotation"},
		{"relative", "rel/dir", "", "invalid state_dir: state_dir must be absolute: 'rel/dir'"},
		{"absent", filepath.Join(base, "nope"), "", "invalid state_dir"},
		{"world writable", ww, "", "group- or world-writable"},
		{"group writable", gw, "", "group- or world-writable"},
		{"file", file, "", "is not a directory"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := StateDir(map[string]string{shieldbundle.AnnStateDir: tc.dir})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %q %v", got, err)
			}
		})
	}
	if os.Geteuid() == 0 {
		other := filepath.Join(base, "other")
		_ = os.Mkdir(other, 0o700)
		_ = os.Chown(other, 12345, 12345)
		if _, err := StateDir(map[string]string{shieldbundle.AnnStateDir: other}); err == nil || !strings.Contains(err.Error(), "owned by uid 12345") {
			t.Fatalf("foreign owner accepted: %v", err)
		}
	}
}

func TestCheckVersion(t *testing.T) {
	// The current version is 5 (shieldbundle.BundleVersion).
	for v, ok := range map[string]bool{"5": true, "4": false, "": false, "05": false, " 5": false, "5.0": false, "6": false} {
		err := CheckVersion(map[string]string{shieldbundle.AnnVersion: v})
		if (err == nil) != ok {
			t.Errorf("version %q: err = %v", v, err)
		}
		if err != nil && !strings.Contains(err.Error(), "!= 5. Re-run the pre-start step.") {
			t.Errorf("message %q", err)
		}
	}
}

func TestReadPrivateFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "r")
	_ = os.WriteFile(p, []byte("abc"), 0o600)
	if b, err := ReadPrivateFile(p, 10); err != nil || string(b) != "abc" {
		t.Fatal(b, err)
	}
	if _, err := ReadPrivateFile(p, 2); err == nil {
		t.Fatal("size limit")
	}
	_ = os.Symlink(p, filepath.Join(dir, "l"))
	if _, err := ReadPrivateFile(filepath.Join(dir, "l"), 10); err == nil {
		t.Fatal("symlink followed")
	}
	if _, err := ReadPrivateFile(dir, 10); err == nil {
		t.Fatal("directory accepted")
	}
	_ = os.Chmod(p, 0o620)
	if _, err := ReadPrivateFile(p, 10); err == nil {
		t.Fatal("group-writable accepted")
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{`{"pid":1,"id":"x","annotations":{"terok.shield.state_dir":"/s","terok.shield.version":"4"}}`, `[]`, `{"annotations":1}`, `{"pid":-1}`, ``} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := Parse(data)
		if err != nil {
			return
		}
		if st.Pid < 0 {
			t.Fatalf("negative pid accepted")
		}
		_ = CheckVersion(st.Annotations)
	})
}

func FuzzAnnotations(f *testing.F) {
	f.Add("/tmp", strconv.Itoa(shieldbundle.BundleVersion))
	f.Add("/tmp", strconv.Itoa(shieldbundle.BundleVersion-1))
	f.Add("rel", "x")
	f.Add("/proc/self/../../tmp", strconv.Itoa(shieldbundle.BundleVersion)+" ")
	f.Fuzz(func(t *testing.T, dir, ver string) {
		ann := map[string]string{shieldbundle.AnnStateDir: dir, shieldbundle.AnnVersion: ver}
		if got, err := StateDir(ann); err == nil {
			if !filepath.IsAbs(got) {
				t.Fatalf("relative dir accepted: %q", got)
			}
			fi, err := os.Lstat(got)
			if err != nil || !fi.IsDir() || fi.Mode().Perm()&0o022 != 0 {
				t.Fatalf("unsafe dir accepted: %q", got)
			}
		}
		if CheckVersion(ann) == nil && ver != strconv.Itoa(shieldbundle.BundleVersion) {
			t.Fatalf("version %q accepted", ver)
		}
	})
}
