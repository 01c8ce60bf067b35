package amtnet

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/blockcast/beacon/test/harness"
	"github.com/blockcast/beacon/test/harness/netns"
)

// The programme ffmpeg generates: deterministic test pattern and tone.
const (
	mediaSeconds   = 6
	mediaServiceID = 4660
	mediaService   = "amtnet"
	mediaWidth     = 320
	mediaHeight    = 240
	mediaRate      = 48000
)

// TestFFmpegToVLC puts third-party software at both ends of the tunnel.
// ffmpeg sends an MPEG-TS programme (lavfi testsrc + sine, MPEG-2 video and
// MP2 audio) as native SSM, with TTL 1, into the relay's network, and also
// writes the same mux to a reference file. The beacon, which reaches the
// relay only by unicast, receives it through the AMT tunnel and re-emits it
// on its LAN, where VLC (headless, as an unprivileged user) joins (S,G) and
// dumps the stream it receives to a file. The dump must be byte for byte
// the reference, and ffprobe must read it as the programme ffmpeg made,
// of the right length.
func TestFFmpegToVLC(t *testing.T) {
	tools := require(t, "ffmpeg", "ffprobe", "cvlc", "setpriv")
	nobody, err := user.Lookup("nobody")
	if err != nil {
		missingf(t)("no unprivileged user to run VLC as: %v", err)
	}
	l := newLab(t, labOpts{})
	group := netip.MustParseAddrPort("232.10.3.1:5004")
	l.startCastd("--amt-query-interval", "10s")
	l.startBeacon("--amt-join", srcIP4.String()+"@"+group.Addr().String()+" relay="+amtRelayIP4.String()+" reemit")
	l.waitJoined(srcIP4, group.Addr(), 15*time.Second)

	shared := sharedDir(t)
	dump := filepath.Join(shared, "vlc-dump.ts")
	ref := filepath.Join(t.TempDir(), "ffmpeg-ref.ts")

	// VLC refuses to run as root: drop to nobody inside the LAN namespace.
	// --demux dump writes what the udp access receives, untouched; the
	// udp access ends the input 3 s after the last datagram, and
	// --play-and-exit then quits.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	vlcArgs := []string{"--reuid=" + nobody.Uid, "--regid=" + nobody.Gid, "--clear-groups",
		tools["cvlc"], "--intf", "dummy", "--no-plugins-cache", "--no-video", "--no-audio",
		"--demux", "dump", "--demuxdump-file", dump,
		"--udp-timeout", "3", "--play-and-exit",
		fmt.Sprintf("udp://%s@%s", srcIP4, group), "vlc://quit"}
	vlc := l.lan.Command(tools["setpriv"], vlcArgs...)
	vlc.Env = append(os.Environ(), "HOME="+shared, "XDG_CONFIG_HOME="+shared, "XDG_CACHE_HOME="+shared, "XDG_DATA_HOME="+shared)
	var vlcOut harness.LineBuffer
	vlc.Stdout, vlc.Stderr = &vlcOut, &vlcOut
	if err := vlc.Start(); err != nil {
		t.Fatal(err)
	}
	vlcDone := make(chan error, 1)
	go func() { vlcDone <- vlc.Wait() }()
	t.Cleanup(func() {
		vlc.Process.Kill()
		<-vlcDone
	})
	// VLC has joined when the LAN namespace's kernel holds its (S,G).
	if !harness.WaitFor(20*time.Second, func() bool { return hasSSM(l.lan, srcIP4, group.Addr()) }) {
		t.Fatalf("VLC did not join (%s,%s):\n%s", srcIP4, group.Addr(), vlcOut.String())
	}

	// ffmpeg: -re paces the source in real time, as a live encoder does.
	// The tee muxer writes the same mux to the network and to ref.
	mux := fmt.Sprintf("[f=mpegts:mpegts_service_id=%d]", mediaServiceID)
	ff := l.src.Command(tools["ffmpeg"], "-hide_banner", "-nostdin", "-loglevel", "error", "-re",
		"-f", "lavfi", "-i", fmt.Sprintf("testsrc=size=%dx%d:rate=25:duration=%d", mediaWidth, mediaHeight, mediaSeconds),
		"-f", "lavfi", "-i", fmt.Sprintf("sine=frequency=1000:sample_rate=%d:duration=%d", mediaRate, mediaSeconds),
		"-map", "0:v", "-map", "1:a", "-c:v", "mpeg2video", "-b:v", "1M", "-g", "25", "-c:a", "mp2", "-b:a", "128k",
		"-metadata", "service_name="+mediaService, "-f", "tee",
		fmt.Sprintf("%sudp://%s?localaddr=%s&ttl=1&pkt_size=1316|%s%s", mux, group, srcIP4, mux, ref))
	ff.Dir = t.TempDir()
	start := time.Now()
	if out, err := ff.CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, out)
	}
	t.Logf("ffmpeg sent %d s of programme in %s", mediaSeconds, time.Since(start).Round(time.Millisecond))

	select {
	case err := <-vlcDone:
		vlcDone <- err // for the cleanup
		if err != nil {
			t.Errorf("VLC: %v\n%s", err, vlcOut.String())
		}
	case <-ctx.Done():
		t.Fatalf("VLC still running 60 s on:\n%s", vlcOut.String())
	}

	want, err := os.ReadFile(ref)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(dump)
	if err != nil {
		t.Fatalf("VLC wrote no dump: %v\n%s", err, vlcOut.String())
	}
	c, _ := l.channelState(srcIP4, group.Addr())
	t.Logf("ffmpeg muxed %d bytes; VLC dumped %d; the gateway received %d datagrams, %d bytes", len(want), len(got), c.Packets, c.Bytes)
	if len(want)%188 != 0 || len(want) == 0 {
		t.Fatalf("reference is %d bytes, not whole TS packets", len(want))
	}
	if !bytes.Equal(got, want) {
		t.Errorf("VLC's dump (%d bytes, sha256 %s) differs from what ffmpeg sent (%d bytes, sha256 %s)",
			len(got), sha(got), len(want), sha(want))
	}
	if c.Bytes != uint64(len(want)) {
		t.Errorf("gateway counted %d payload bytes, ffmpeg sent %d", c.Bytes, len(want))
	}
	checkProgramme(t, tools["ffprobe"], dump)
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:8])
}

// checkProgramme runs ffprobe on a dump and checks it is the programme
// the test generated.
func checkProgramme(t *testing.T, ffprobe, path string) {
	t.Helper()
	out, err := exec.Command(ffprobe, "-v", "error", "-show_format", "-show_programs", "-of", "json", path).Output()
	if err != nil {
		t.Fatalf("ffprobe: %v", err)
	}
	var probe struct {
		Format struct {
			FormatName string `json:"format_name"`
			Duration   string `json:"duration"`
		} `json:"format"`
		Programs []struct {
			ProgramID int               `json:"program_id"`
			Tags      map[string]string `json:"tags"`
			Streams   []struct {
				CodecType  string `json:"codec_type"`
				CodecName  string `json:"codec_name"`
				Width      int    `json:"width"`
				Height     int    `json:"height"`
				FrameRate  string `json:"r_frame_rate"`
				SampleRate string `json:"sample_rate"`
				Duration   string `json:"duration"`
			} `json:"streams"`
		} `json:"programs"`
	}
	if err := json.Unmarshal(out, &probe); err != nil {
		t.Fatalf("ffprobe JSON: %v", err)
	}
	if probe.Format.FormatName != "mpegts" {
		t.Errorf("format %q, want mpegts", probe.Format.FormatName)
	}
	near := func(what, s string) {
		d, err := strconv.ParseFloat(s, 64)
		if err != nil || math.Abs(d-mediaSeconds) > 0.5 {
			t.Errorf("%s lasts %q s, want %d ± 0.5", what, s, mediaSeconds)
		}
	}
	near("the dump", probe.Format.Duration)
	if len(probe.Programs) != 1 {
		t.Fatalf("%d programmes, want 1: %s", len(probe.Programs), out)
	}
	p := probe.Programs[0]
	if p.ProgramID != mediaServiceID || p.Tags["service_name"] != mediaService {
		t.Errorf("programme %d %q, want %d %q", p.ProgramID, p.Tags["service_name"], mediaServiceID, mediaService)
	}
	var kinds []string
	for _, s := range p.Streams {
		kinds = append(kinds, s.CodecType+"/"+s.CodecName)
		switch s.CodecType {
		case "video":
			if s.CodecName != "mpeg2video" || s.Width != mediaWidth || s.Height != mediaHeight || s.FrameRate != "25/1" {
				t.Errorf("video %s %dx%d @%s, want mpeg2video %dx%d @25/1", s.CodecName, s.Width, s.Height, s.FrameRate, mediaWidth, mediaHeight)
			}
			near("the video", s.Duration)
		case "audio":
			if s.CodecName != "mp2" || s.SampleRate != strconv.Itoa(mediaRate) {
				t.Errorf("audio %s @%s Hz, want mp2 @%d", s.CodecName, s.SampleRate, mediaRate)
			}
			near("the audio", s.Duration)
		}
	}
	if strings.Join(kinds, ",") != "video/mpeg2video,audio/mp2" {
		t.Errorf("streams %v, want video/mpeg2video, audio/mp2", kinds)
	}
}

// hasSSM reports whether a socket in ns holds an INCLUDE membership of
// (s,g): /proc/net/mcfilter lists the group and source in hex, in network
// byte order read as a host integer.
func hasSSM(ns *netns.NS, s, g netip.Addr) bool {
	b, err := ns.ReadFile("/proc/thread-self/net/mcfilter")
	if err != nil {
		return false
	}
	hexOf := func(a netip.Addr) string {
		v := a.As4()
		return fmt.Sprintf("0x%02x%02x%02x%02x", v[0], v[1], v[2], v[3])
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 6 && strings.EqualFold(f[2], hexOf(g)) && strings.EqualFold(f[3], hexOf(s)) && f[4] != "0" {
			return true
		}
	}
	return false
}
