package deploytest

import (
	"bytes"
	"debug/buildinfo"
	"debug/elf"
	"encoding/json"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// There is no container engine on the project's machines, so this test does
// the part of `docker build` that can go wrong in the code: it runs the
// Dockerfile's build command exactly as written (the RUN after the
// "# sluice:build" marker, build arguments substituted) in a copy of the
// build context that honours .dockerignore, then checks that the binary is
// static, carries the stamped version, and that the runtime stage copies and
// runs that binary as a non-root user.

// moduleRoot is the build context: the module's root, one up from here.
const moduleRoot = ".."

// dockerInstr is one Dockerfile instruction, continuation lines joined.
type dockerInstr struct {
	stage  int    // index of the FROM it belongs to
	cmd    string // upper case: FROM, RUN, ARG, ...
	args   string
	marked bool // preceded by the "# sluice:build" comment
}

// parseDockerfile splits a Dockerfile into instructions. Comment lines
// inside a continuation are dropped, as docker does.
func parseDockerfile(t *testing.T, src string) []dockerInstr {
	t.Helper()
	var out []dockerInstr
	stage, marked := -1, false
	lines := strings.Split(src, "\n")
	for i := 0; i < len(lines); i++ {
		line := strings.TrimSpace(lines[i])
		if line == "" {
			continue
		}
		if strings.HasPrefix(line, "#") {
			if strings.TrimSpace(strings.TrimPrefix(line, "#")) == "sluice:build" {
				marked = true
			}
			continue
		}
		for strings.HasSuffix(line, `\`) && i+1 < len(lines) {
			line = strings.TrimSuffix(line, `\`)
			i++
			next := strings.TrimSpace(lines[i])
			if strings.HasPrefix(next, "#") {
				next = `\`
			}
			line += " " + next
		}
		cmd, args, _ := strings.Cut(line, " ")
		cmd = strings.ToUpper(cmd)
		if cmd == "FROM" {
			stage++
		}
		out = append(out, dockerInstr{stage: stage, cmd: cmd, args: strings.TrimSpace(args), marked: marked})
		marked = false
	}
	return out
}

// shellWords splits a command line as sh would for the simple forms a RUN
// uses: blanks separate words, single quotes are literal, double quotes
// group and a backslash escapes the next character.
func shellWords(t *testing.T, s string) []string {
	t.Helper()
	var words []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == ' ' || c == '\t':
			if inWord {
				words, inWord = append(words, cur.String()), false
				cur.Reset()
			}
		case c == '\'':
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				t.Fatalf("unterminated ' in %q", s)
			}
			cur.WriteString(s[i+1 : i+1+j])
			i, inWord = i+1+j, true
		case c == '"':
			inWord = true
			for i++; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) {
					i++
				}
				cur.WriteByte(s[i])
			}
			if i >= len(s) {
				t.Fatalf("unterminated \" in %q", s)
			}
		case c == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
			inWord = true
		case strings.IndexByte(";&|<>`()", c) >= 0:
			t.Fatalf("the build command %q uses shell syntax (%q) this test cannot run exactly", s, c)
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}

var dockerVarRE = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)`)

// dockerignored reports whether rel (slash-separated, relative to the
// context) matches a .dockerignore pattern: path.Match per path element,
// with ** matching any number of elements.
func dockerignored(patterns [][]string, rel string) bool {
	var match func(p, r []string) bool
	match = func(p, r []string) bool {
		if len(p) == 0 {
			return len(r) == 0
		}
		if p[0] == "**" {
			for i := 0; i <= len(r); i++ {
				if match(p[1:], r[i:]) {
					return true
				}
			}
			return false
		}
		if len(r) == 0 {
			return false
		}
		ok, err := path.Match(p[0], r[0])
		return err == nil && ok && match(p[1:], r[1:])
	}
	parts := strings.Split(rel, "/")
	for _, p := range patterns {
		if match(p, parts) {
			return true
		}
	}
	return false
}

// copyBuildContext copies the repository into dst, leaving out what
// .dockerignore excludes.
func copyBuildContext(t *testing.T, dst string) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(moduleRoot, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	var patterns [][]string
	for _, line := range strings.Split(string(raw), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, "!") {
			t.Fatalf(".dockerignore: exception patterns (%q) are not supported by this test", line)
		}
		patterns = append(patterns, strings.Split(path.Clean(strings.TrimPrefix(line, "/")), "/"))
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	err = filepath.WalkDir(moduleRoot, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == moduleRoot {
			return err
		}
		rel, err := filepath.Rel(moduleRoot, p)
		if err != nil {
			return err
		}
		if dockerignored(patterns, filepath.ToSlash(rel)) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		src, err := os.Open(p)
		if err != nil {
			return err
		}
		defer src.Close()
		out, err := os.Create(target)
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, src); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestDockerfileBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds sluice with the Dockerfile's command; skipped with -short")
	}
	src, err := os.ReadFile(filepath.Join(moduleRoot, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	instrs := parseDockerfile(t, string(src))

	// The marked RUN, in the builder stage.
	var run dockerInstr
	n := 0
	for _, in := range instrs {
		if in.marked {
			run, n = in, n+1
		}
	}
	if n != 1 || run.cmd != "RUN" {
		t.Fatalf("want exactly one RUN after \"# sluice:build\", found %d (%+v)", n, run)
	}
	builder := ""
	args := map[string]bool{}
	for _, in := range instrs {
		if in.stage != run.stage {
			continue
		}
		switch in.cmd {
		case "FROM":
			f := strings.Fields(in.args)
			if len(f) >= 2 && strings.EqualFold(f[len(f)-2], "AS") {
				builder = f[len(f)-1]
			}
		case "ARG":
			name, _, _ := strings.Cut(in.args, "=")
			args[name] = true
		}
	}
	if builder == "" {
		t.Fatal("the build stage has no name (FROM ... AS name)")
	}

	words := shellWords(t, run.args)
	for len(words) > 0 && strings.HasPrefix(words[0], "--") {
		words = words[1:] // RUN flags: --mount=..., --network=...
	}
	const version = "v0.0.0-dockerfile-test"
	vars := map[string]string{"VERSION": version, "TARGETOS": runtime.GOOS, "TARGETARCH": runtime.GOARCH}
	for i, w := range words {
		words[i] = dockerVarRE.ReplaceAllStringFunc(w, func(m string) string {
			name := strings.Trim(m, "${}")
			v, ok := vars[name]
			if !ok || !args[name] {
				t.Fatalf("the build command uses $%s, which is not a known ARG of the build stage", name)
			}
			return v
		})
	}
	env := map[string]string{}
	for len(words) > 0 && strings.Contains(words[0], "=") && !strings.HasPrefix(words[0], "-") {
		k, v, _ := strings.Cut(words[0], "=")
		env[k], words = v, words[1:]
	}
	if len(words) < 2 || words[0] != "go" || words[1] != "build" {
		t.Fatalf("the marked RUN is not a go build: %q", run.args)
	}
	if env["CGO_ENABLED"] != "0" {
		t.Errorf("the build does not set CGO_ENABLED=0: %q", run.args)
	}
	if !slices.Contains(words, "-trimpath") {
		t.Errorf("the build does not use -trimpath: %q", run.args)
	}
	out := ""
	dir := t.TempDir()
	bin := filepath.Join(dir, "sluice")
	for i := range words {
		if words[i] == "-o" && i+1 < len(words) {
			out, words[i+1] = words[i+1], bin
		}
	}
	if out == "" {
		t.Fatalf("the build names no output (-o): %q", run.args)
	}

	// The runtime stage must ship that binary and run it as non-root.
	last := instrs[len(instrs)-1].stage
	var copied, entry, user, base string
	for _, in := range instrs {
		if in.stage != last {
			continue
		}
		switch in.cmd {
		case "FROM":
			base = in.args
		case "COPY":
			f := strings.Fields(in.args)
			if len(f) == 3 && f[0] == "--from="+builder && f[1] == out {
				copied = f[2]
			}
		case "ENTRYPOINT":
			var argv []string
			if err := json.Unmarshal([]byte(in.args), &argv); err != nil || len(argv) == 0 {
				t.Errorf("ENTRYPOINT %s is not an exec-form JSON array", in.args)
			} else {
				entry = argv[0]
			}
		case "USER":
			user = in.args
		}
	}
	if !strings.Contains(base, "distroless/static") && base != "scratch" {
		t.Errorf("the runtime stage is FROM %s, want distroless static or scratch", base)
	}
	if copied == "" || entry != copied {
		t.Errorf("the runtime stage must COPY --from=%s %s and run it: copied to %q, ENTRYPOINT %q", builder, out, copied, entry)
	}
	if u, _, _ := strings.Cut(user, ":"); u == "" || u == "0" || u == "root" {
		t.Errorf("the runtime stage runs as user %q, want a non-root user", user)
	}

	ctxDir := filepath.Join(dir, "context")
	copyBuildContext(t, ctxDir)
	cmd := exec.Command(words[0], words[1:]...)
	cmd.Dir = ctxDir
	cmd.Env = append(os.Environ(), "GOFLAGS=")
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s (in a copy of the build context): %v\n%s", strings.Join(cmd.Args, " "), err, b)
	}

	if runtime.GOOS == "linux" {
		f, err := elf.Open(bin)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
				t.Errorf("the binary has a %v program header: it is not static", p.Type)
			}
		}
		if libs, err := f.ImportedLibraries(); err != nil || len(libs) > 0 {
			t.Errorf("the binary links shared libraries %v (%v)", libs, err)
		}
		f.Close()
	}
	bi, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	if settings["CGO_ENABLED"] != "0" || settings["-trimpath"] != "true" {
		t.Errorf("build settings CGO_ENABLED=%q -trimpath=%q, want 0 and true", settings["CGO_ENABLED"], settings["-trimpath"])
	}

	var stdout, stderr bytes.Buffer
	v := exec.Command(bin, "version")
	v.Stdout, v.Stderr = &stdout, &stderr
	if err := v.Run(); err != nil {
		t.Fatalf("%s version: %v: %s", bin, err, stderr.String())
	}
	if got, want := stdout.String(), "sluice "+version+"\n"; got != want {
		t.Errorf("sluice version printed %q, want %q", got, want)
	}
}

// The image's Go must be go.mod's toolchain: the official Go images set
// GOTOOLCHAIN=local and ignore the toolchain line, so an older GO_VERSION
// ships a standard library that govulncheck (run with the toolchain) never
// checked.
func TestDockerfileGoIsTheToolchain(t *testing.T) {
	src, err := os.ReadFile(filepath.Join(moduleRoot, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	mod, err := os.ReadFile(filepath.Join(moduleRoot, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	var image, toolchain string
	for _, in := range parseDockerfile(t, string(src)) {
		if v, ok := strings.CutPrefix(in.args, "GO_VERSION="); in.cmd == "ARG" && ok {
			image = v
		}
	}
	for line := range strings.SplitSeq(string(mod), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "toolchain go"); ok {
			toolchain = v
		}
	}
	if image == "" || toolchain == "" || image != toolchain {
		t.Errorf("Dockerfile GO_VERSION=%q, go.mod toolchain go%s: want them equal", image, toolchain)
	}
}
