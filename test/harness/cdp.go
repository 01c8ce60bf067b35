package harness

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/websocket"
)

// Browser is a headless Chromium driven over the DevTools protocol, so a
// test can watch a live page the way a person would and take screenshots.
type Browser struct {
	cmd     *exec.Cmd
	debug   string // http://127.0.0.1:PORT
	dataDir string
}

// ChromiumPath finds Debian's chromium.
func ChromiumPath() (string, error) {
	for _, p := range []string{"/usr/bin/chromium", "/usr/bin/chromium-browser"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return exec.LookPath("chromium")
}

var devtoolsRE = regexp.MustCompile(`DevTools listening on ws://([^/]+)/`)

// StartBrowser starts headless Chromium with a fresh profile in dataDir.
func StartBrowser(dataDir string) (*Browser, error) {
	bin, err := ChromiumPath()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
		"--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage", "--remote-debugging-port=0", "--remote-allow-origins=*", "--user-data-dir="+dataDir,
		"--window-size=1280,900", "about:blank")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start chromium: %w", err)
	}
	b := &Browser{cmd: cmd, dataDir: dataDir}
	found := make(chan string, 1)
	var lines []string
	var mu sync.Mutex
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			mu.Lock()
			lines = append(lines, sc.Text())
			mu.Unlock()
			if m := devtoolsRE.FindStringSubmatch(sc.Text()); m != nil {
				found <- m[1]
			}
		}
		io.Copy(io.Discard, stderr)
	}()
	select {
	case hostport := <-found:
		b.debug = "http://" + hostport
		return b, nil
	case <-time.After(30 * time.Second):
		b.Close()
		mu.Lock()
		defer mu.Unlock()
		return nil, fmt.Errorf("chromium did not open its DevTools port:\n%s", strings.Join(lines, "\n"))
	}
}

// Close stops the browser and everything it started.
func (b *Browser) Close() {
	if b.cmd.Process != nil {
		syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL)
		b.cmd.Wait()
	}
}

// Page is one tab.
type Page struct {
	ws   *websocket.Conn
	mu   sync.Mutex
	next int
}

// Open opens url in a new tab.
func (b *Browser) Open(url string) (*Page, error) {
	req, _ := http.NewRequest(http.MethodPut, b.debug+"/json/new?"+url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var target struct {
		WebSocketDebuggerURL string `json:"webSocketDebuggerUrl"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&target); err != nil || target.WebSocketDebuggerURL == "" {
		return nil, fmt.Errorf("devtools /json/new: %v (status %s)", err, resp.Status)
	}
	ws, err := websocket.Dial(target.WebSocketDebuggerURL, "", "http://127.0.0.1/")
	if err != nil {
		return nil, err
	}
	ws.MaxPayloadBytes = 64 << 20
	return &Page{ws: ws}, nil
}

// Close closes the tab's connection.
func (p *Page) Close() { p.ws.Close() }

func (p *Page) call(method string, params any, result any) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.next++
	id := p.next
	if err := websocket.JSON.Send(p.ws, map[string]any{"id": id, "method": method, "params": params}); err != nil {
		return err
	}
	p.ws.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		var msg struct {
			ID     int             `json:"id"`
			Result json.RawMessage `json:"result"`
			Error  *struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := websocket.JSON.Receive(p.ws, &msg); err != nil {
			return fmt.Errorf("devtools %s: %w", method, err)
		}
		if msg.ID != id {
			continue // an event
		}
		if msg.Error != nil {
			return fmt.Errorf("devtools %s: %s", method, msg.Error.Message)
		}
		if result != nil {
			return json.Unmarshal(msg.Result, result)
		}
		return nil
	}
}

// Eval evaluates a JavaScript expression in the page and returns its value
// as JSON.
func (p *Page) Eval(expr string) (json.RawMessage, error) {
	var res struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text string `json:"text"`
		} `json:"exceptionDetails"`
	}
	if err := p.call("Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true}, &res); err != nil {
		return nil, err
	}
	if res.ExceptionDetails != nil {
		return nil, errors.New("page script: " + res.ExceptionDetails.Text)
	}
	return res.Result.Value, nil
}

// EvalString evaluates expr and returns it as a string ("" for null).
func (p *Page) EvalString(expr string) string {
	raw, err := p.Eval(expr)
	if err != nil {
		return ""
	}
	var s string
	json.Unmarshal(raw, &s)
	return s
}

// Screenshot saves a PNG of the page.
func (p *Page) Screenshot(path string) error {
	var res struct {
		Data string `json:"data"`
	}
	if err := p.call("Page.captureScreenshot", map[string]any{"format": "png"}, &res); err != nil {
		return err
	}
	png, err := base64.StdEncoding.DecodeString(res.Data)
	if err != nil {
		return err
	}
	return os.WriteFile(path, png, 0o644)
}

// SetViewport emulates a device size (e.g. a phone: 390×844, mobile).
func (p *Page) SetViewport(w, h int, mobile bool) error {
	return p.call("Emulation.setDeviceMetricsOverride", map[string]any{"width": w, "height": h, "deviceScaleFactor": 1, "mobile": mobile}, nil)
}
