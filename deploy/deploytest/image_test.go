//go:build chartcheck

package deploytest

import (
	"bytes"
	"context"
	"debug/buildinfo"
	"debug/elf"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

// No container engine runs in CI, so the image is checked through what
// defines it: the Dockerfile is parsed with BuildKit's own parser (and its
// linter), its build line must be the Makefile's, the binary is built with
// that line from exactly the files the build context holds (.dockerignore
// applied), and it runs as the image's user from a read-only folder.

const (
	repoRoot        = "../.."
	nonRootUID      = 65532
	testVersion     = "v9.9.9-chartcheck"
	runtimeImage    = "gcr.io/distroless/static-debian12:nonroot"
	builderImage    = "golang:1.27"
	brokerPackage   = "./cmd/broker"
	imageEntrypoint = "/broker"
)

type dockerfile struct {
	stages   []instructions.Stage
	metaArgs []instructions.ArgCommand
}

func parseDockerfile(t *testing.T) *dockerfile {
	t.Helper()
	res, err := parser.Parse(bytes.NewReader(readFile(t, filepath.Join(repoRoot, "Dockerfile"))))
	if err != nil {
		t.Fatalf("Dockerfile: %v", err)
	}
	for _, w := range res.Warnings {
		t.Errorf("Dockerfile:%d: %s", w.Location.Start.Line, w.Short)
	}
	lint := linter.New(&linter.Config{Warn: func(rule, desc, url, msg string, loc []parser.Range) {
		line := 0
		if len(loc) > 0 {
			line = loc[0].Start.Line
		}
		t.Errorf("Dockerfile:%d: lint %s: %s (%s)", line, rule, msg, url)
	}})
	stages, metaArgs, err := instructions.Parse(res.AST, lint)
	if err != nil {
		t.Fatalf("Dockerfile: %v", err)
	}
	if len(stages) < 2 {
		t.Fatalf("Dockerfile: %d stages, want a build stage and a runtime stage", len(stages))
	}
	return &dockerfile{stages: stages, metaArgs: metaArgs}
}

func commandsOf[T any](s instructions.Stage) []T {
	var out []T
	for _, c := range s.Commands {
		if v, ok := c.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

// buildLine returns the words of the build stage's `go build` command with
// VERSION set to version, as BuildKit's shell lexer splits them.
func (d *dockerfile) buildLine(t *testing.T, version string) []string {
	t.Helper()
	build := d.stages[0]
	var found []string
	for _, run := range commandsOf[*instructions.RunCommand](build) {
		line := strings.Join(run.CmdLine, " ")
		if !strings.Contains(line, "go build") {
			continue
		}
		if found != nil {
			t.Fatalf("Dockerfile: more than one `go build`")
		}
		words, err := shell.NewLex('\\').ProcessWords(line, shell.EnvsFromSlice([]string{"VERSION=" + version}))
		if err != nil {
			t.Fatalf("Dockerfile: %s: %v", line, err)
		}
		found = words
	}
	if found == nil {
		t.Fatal("Dockerfile: no `go build` in the first stage")
	}
	return found
}

// makefileBuild returns the Makefile's $(GOBUILD) for version, split into
// words the same way.
func makefileBuild(t *testing.T, version string) []string {
	t.Helper()
	cmd := exec.Command("make", "--no-print-directory", "-s", "-f", "Makefile", "-f", "-", "print-gobuild",
		"VERSION="+version, "GO=go")
	cmd.Dir = repoRoot
	cmd.Stdin = strings.NewReader("print-gobuild:\n\t@printf '%s\\n' '$(GOBUILD)'\n")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make print-gobuild: %v\n%s", err, out)
	}
	words, err := shell.NewLex('\\').ProcessWords(strings.TrimSpace(string(out)), shell.EnvsFromSlice(nil))
	if err != nil {
		t.Fatalf("Makefile GOBUILD %q: %v", out, err)
	}
	return words
}

func TestDockerfile(t *testing.T) {
	d := parseDockerfile(t)
	build, final := d.stages[0], d.stages[len(d.stages)-1]
	if build.BaseName != builderImage {
		t.Errorf("build stage FROM %s, want %s", build.BaseName, builderImage)
	}
	if final.BaseName != runtimeImage {
		t.Errorf("final stage FROM %s, want %s (static, CA certificates, no shell, non-root user)", final.BaseName, runtimeImage)
	}
	if runs := commandsOf[*instructions.RunCommand](final); len(runs) > 0 {
		t.Errorf("final stage has RUN %v: the runtime image has no shell", runs[0].CmdLine)
	}
	users := commandsOf[*instructions.UserCommand](final)
	if len(users) != 1 || users[0].User != "65532:65532" {
		t.Errorf("final stage USER %v, want exactly one USER 65532:65532", users)
	}
	var ports []string
	for _, e := range commandsOf[*instructions.ExposeCommand](final) {
		ports = append(ports, e.Ports...)
	}
	if !slices.Equal(ports, []string{"8080", "9090"}) {
		t.Errorf("EXPOSE %v, want 8080 9090", ports)
	}
	eps := commandsOf[*instructions.EntrypointCommand](final)
	if len(eps) != 1 || eps[0].PrependShell || !slices.Equal(eps[0].CmdLine, []string{imageEntrypoint}) {
		t.Errorf("ENTRYPOINT %+v, want exec form [\"/broker\"] (no shell)", eps)
	}
	env := imageEnv(final)
	for k, want := range map[string]string{
		"BROKER_LISTEN_ADDR":  "0.0.0.0:8080",
		"BROKER_METRICS_ADDR": "0.0.0.0:9090",
		"BROKER_DATA_DIR":     "/data",
	} {
		if env[k] != want {
			t.Errorf("final stage ENV %s=%q, want %q", k, env[k], want)
		}
	}
	var vols []string
	for _, v := range commandsOf[*instructions.VolumeCommand](final) {
		vols = append(vols, v.Volumes...)
	}
	if !slices.Contains(vols, env["BROKER_DATA_DIR"]) {
		t.Errorf("VOLUME %v does not hold BROKER_DATA_DIR %s: with a read-only root filesystem the store needs a volume", vols, env["BROKER_DATA_DIR"])
	}

	// The build line: the Makefile's flags, then the output and the package.
	got, want := d.buildLine(t, testVersion), makefileBuild(t, testVersion)
	if len(got) != len(want)+3 || !slices.Equal(got[:len(want)], want) || got[len(want)] != "-o" || got[len(want)+2] != brokerPackage {
		t.Errorf("Dockerfile builds with\n  %q\nwant the Makefile's GOBUILD\n  %q\nfollowed by -o <file> %s", got, want, brokerPackage)
	}
}

func imageEnv(s instructions.Stage) map[string]string {
	env := map[string]string{}
	for _, e := range commandsOf[*instructions.EnvCommand](s) {
		for _, kv := range e.Env {
			env[kv.Key] = kv.Value
		}
	}
	return env
}

// TestImageBinary builds the broker exactly as the Dockerfile does, from a
// copy of the build context, and checks the result and how it runs.
func TestImageBinary(t *testing.T) {
	d := parseDockerfile(t)
	words := d.buildLine(t, testVersion)
	abs, err := filepath.Abs(repoRoot)
	if err != nil {
		t.Fatal(err)
	}

	// A folder every user can read and traverse (t.TempDir's parents are
	// private to root), holding the build context, the binary and the run
	// folders.
	top, err := os.MkdirTemp("", "tokenbroker-image-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(top) })
	if err := os.Chmod(top, 0o755); err != nil {
		t.Fatal(err)
	}
	ctxDir := filepath.Join(top, "context")
	copyBuildContext(t, abs, ctxDir)

	bin := filepath.Join(top, "broker")
	var env []string
	i := 0
	for ; i < len(words) && strings.Contains(words[i], "=") && !strings.HasPrefix(words[i], "-"); i++ {
		env = append(env, words[i])
	}
	args := slices.Clone(words[i:])
	args[len(args)-2] = bin // the -o argument
	build := exec.Command(args[0], args[1:]...)
	build.Dir = ctxDir
	// The context has no .git, as in the image build, so no VCS stamping.
	build.Env = append(os.Environ(), env...)
	start := time.Now()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("%s (in the build context): %v\n%s", strings.Join(words, " "), err, out)
	}
	t.Logf("built in %v: %s %s", time.Since(start).Round(time.Millisecond), strings.Join(env, " "), strings.Join(args, " "))

	t.Run("static, trimmed, versioned", func(t *testing.T) {
		checkBinary(t, bin, abs, ctxDir)
	})
	t.Run("version as non-root from a read-only folder", func(t *testing.T) {
		ro := readOnlyDir(t, top, "ro-version")
		if out := runAs(t, ro, nil, "/usr/bin/id", "-u"); strings.TrimSpace(out) != fmt.Sprint(wantUID()) {
			t.Fatalf("id -u: %q, want %d", out, wantUID())
		}
		if out := runAs(t, ro, nil, bin, "version"); out != testVersion+"\n" {
			t.Errorf("broker version: %q, want %q", out, testVersion+"\n")
		}
	})
	t.Run("serves as non-root with a read-only root and a data volume", func(t *testing.T) {
		serveAsNonRoot(t, d, top, bin)
	})
}

// copyBuildContext copies the files `docker build .` would send: the
// repository without what .dockerignore excludes (Docker's own matcher).
func copyBuildContext(t *testing.T, root, dst string) {
	t.Helper()
	f, err := os.Open(filepath.Join(root, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	patterns, err := ignorefile.ReadAll(f)
	_ = f.Close()
	if err != nil {
		t.Fatalf(".dockerignore: %v", err)
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		t.Fatalf(".dockerignore: %v", err)
	}
	n := 0
	err = filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if rel == "." {
			return os.MkdirAll(dst, 0o755)
		}
		skip, err := pm.MatchesOrParentMatches(filepath.ToSlash(rel))
		if err != nil {
			return err
		}
		if skip {
			if e.IsDir() && !pm.Exclusions() {
				return filepath.SkipDir
			}
			return nil
		}
		target := filepath.Join(dst, rel)
		switch {
		case e.IsDir():
			return os.MkdirAll(target, 0o755)
		case e.Type().IsRegular():
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			n++
			return os.WriteFile(target, b, 0o644)
		}
		return nil // symlinks, sockets: not needed to build
	})
	if err != nil {
		t.Fatalf("copy build context: %v", err)
	}
	for _, p := range []string{"go.mod", "go.sum", "cmd/broker/main.go"} {
		if _, err := os.Stat(filepath.Join(dst, p)); err != nil {
			t.Fatalf(".dockerignore excludes %s, which the build needs", p)
		}
	}
	t.Logf("build context: %d files", n)
}

func checkBinary(t *testing.T, bin string, buildDirs ...string) {
	bi, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	// Go leaves -ldflags out of the build info of a -trimpath build (it may
	// hold paths); its effects are checked below and by `broker version`.
	for k, want := range map[string]string{
		"CGO_ENABLED": "0",
		"-trimpath":   "true",
	} {
		if settings[k] != want {
			t.Errorf("build setting %s=%q, want %q (go version -m)", k, settings[k], want)
		}
	}
	if bi.Path != "github.com/tokenbroker/tokenbroker/cmd/broker" {
		t.Errorf("main package %q", bi.Path)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("the binary has an ELF interpreter: it is dynamically linked and would not run on distroless/static")
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("the binary needs shared libraries %v", libs)
	}
	// -s -w: no symbol table, no DWARF.
	for _, sec := range []string{".symtab", ".debug_info"} {
		if f.Section(sec) != nil {
			t.Errorf("the binary has a %s section: not linked with -s -w", sec)
		}
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	// -trimpath: no path of the machine that built it.
	goenv, err := exec.Command("go", "env", "GOROOT", "GOMODCACHE").Output()
	if err != nil {
		t.Fatalf("go env: %v", err)
	}
	for _, p := range append(buildDirs, strings.Fields(string(goenv))...) {
		if p != "" && p != "/" && bytes.Contains(data, []byte(p+"/")) {
			t.Errorf("the binary contains the build machine's path %s: not built with -trimpath", p)
		}
	}
}

func wantUID() int {
	if os.Geteuid() == 0 {
		return nonRootUID
	}
	return os.Geteuid() // already not root
}

// runAs runs the command as the image's user (65532:65532 without
// supplementary groups, through util-linux's setpriv) when the test runs as
// root, and as the current, non-root user otherwise; in dir, with env only.
func runAs(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	cmd := commandAs(t, dir, env, name, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %v as uid %d: %v\n%s", name, args, wantUID(), err, stderr.String())
	}
	return string(out)
}

func commandAs(t *testing.T, dir string, env []string, name string, args ...string) *exec.Cmd {
	t.Helper()
	var cmd *exec.Cmd
	if os.Geteuid() == 0 {
		setpriv, err := exec.LookPath("setpriv")
		if err != nil {
			t.Fatalf("setpriv (util-linux) is needed to run as %d: %v", nonRootUID, err)
		}
		id := fmt.Sprint(nonRootUID)
		cmd = exec.Command(setpriv, append([]string{"--reuid=" + id, "--regid=" + id, "--clear-groups", "--", name}, args...)...)
	} else {
		cmd = exec.Command(name, args...)
	}
	cmd.Dir = dir
	cmd.Env = env
	return cmd
}

// readOnlyDir makes a folder the non-root user can enter but not write.
func readOnlyDir(t *testing.T, top, name string) string {
	t.Helper()
	dir := filepath.Join(top, name)
	if err := os.Mkdir(dir, 0o555); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o555); err != nil { // umask
		t.Fatal(err)
	}
	return dir
}

// serveAsNonRoot runs `broker` (serve) with the image's environment, as its
// user, from a read-only working folder, with a writable folder standing in
// for the /data volume: it must become ready, report the injected version in
// tokenbroker_build_info, write only into the data folder, and stop cleanly on
// SIGTERM.
func serveAsNonRoot(t *testing.T, d *dockerfile, top, bin string) {
	ro := readOnlyDir(t, top, "ro-serve")
	data := filepath.Join(top, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		if err := os.Chown(data, nonRootUID, nonRootUID); err != nil {
			t.Fatal(err)
		}
	}
	apiAddr, opsAddr := freeLoopback(t), freeLoopback(t)
	var env []string
	for k, v := range imageEnv(d.stages[len(d.stages)-1]) {
		switch k {
		case "BROKER_LISTEN_ADDR": // the image's 0.0.0.0 ports may be taken here
			v = apiAddr
		case "BROKER_METRICS_ADDR":
			v = opsAddr
		case "BROKER_DATA_DIR":
			v = data
		}
		env = append(env, k+"="+v)
	}
	env = append(env, "BROKER_AUTH_HS256_SECRET=chartcheck-hs256-secret-of-32-bytes-or-more", "BROKER_LOG_FORMAT=text")
	cmd := commandAs(t, ro, env, bin)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-done
		}
	}()

	ready := false
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if code, _ := get(t, "http://"+opsAddr+"/readyz"); code == http.StatusOK {
			ready = true
			break
		}
		select {
		case err := <-done:
			t.Fatalf("broker exited before it was ready: %v\n%s", err, logs.String())
		default:
		}
	}
	if !ready {
		t.Fatalf("broker not ready within 30s\n%s", logs.String())
	}
	code, metrics := get(t, "http://"+opsAddr+"/metrics")
	if want := fmt.Sprintf(`version=%q`, testVersion); code != http.StatusOK || !strings.Contains(metrics, "tokenbroker_build_info{") ||
		!strings.Contains(metrics, want) {
		t.Errorf("/metrics (%d) does not report tokenbroker_build_info with %s", code, want)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("broker exited with %v after SIGTERM\n%s", err, logs.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("broker still running 60s after SIGTERM\n%s", logs.String())
	}
	// Everything the broker wrote is in the data folder and belongs to its user.
	err := filepath.WalkDir(data, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := e.Info()
		if err != nil {
			return err
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok && int(st.Uid) != wantUID() {
			t.Errorf("%s belongs to uid %d, want %d", path, st.Uid, wantUID())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(data)
	if len(entries) == 0 {
		t.Errorf("the embedded store wrote nothing into BROKER_DATA_DIR\n%s", logs.String())
	}
	if entries, _ := os.ReadDir(ro); len(entries) != 0 {
		t.Errorf("the broker wrote into its working folder: %v", entries)
	}
}

func freeLoopback(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
