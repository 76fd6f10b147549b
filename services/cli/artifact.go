package cli

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	artifactv1 "github.com/sluicehq/sluice/proto/gen/sluice/artifact/v1"
	"github.com/sluicehq/sluice/proto/gen/sluice/artifact/v1/artifactv1connect"
)

// pushChunk is the size of each chunk a push sends (the API's limit).
const pushChunk = 1 << 20

func (a *app) artifacts() artifactv1connect.ArtifactServiceClient {
	return artifactv1connect.NewArtifactServiceClient(a.cfg.HTTPClient, a.api)
}

func (a *app) artifactCommand() *cobra.Command {
	c := group("artifact", "Push and list the artifacts agents run, by sha256 digest")
	c.Aliases = []string{"artifacts"}
	c.AddCommand(a.artifactPushCommand(), a.artifactListCommand(), a.artifactGetCommand())
	return c
}

// artifactName accepts what core/revision accepts before "@".
var artifactName = regexp.MustCompile(`^([a-z0-9.-]+(:[0-9]+)?/)?[a-z0-9._-]+(/[a-z0-9._-]+)*$`)

// defaultArtifactName derives a name from a file name: lower-cased, without
// a .tar.gz, .tgz or .gz suffix.
func defaultArtifactName(file string) string {
	n := strings.ToLower(filepath.Base(file))
	for _, suf := range []string{".tar.gz", ".tgz", ".gz"} {
		if strings.HasSuffix(n, suf) {
			n = strings.TrimSuffix(n, suf)
			break
		}
	}
	return n
}

func (a *app) artifactPushCommand() *cobra.Command {
	var name string
	c := &cobra.Command{
		Use:   "push FILE",
		Short: "Upload an artifact and print its immutable revision",
		Long: `Upload FILE, an executable or a .tar.gz whose top-level sluice.entrypoint file
names the program, to the artifact store, and print the immutable revision
NAME@sha256:<digest> to use in rollout specs. The digest is computed here and
again by the server, which refuses the upload if they differ. Pushing bytes
that are already stored uploads nothing. See docs/artifacts.md.`,
		Example: "  sluice artifact push ./bin/cart --name shop/cart\n  REV=$(sluice artifact push cart.tar.gz)",
		Args:    exactArgs("FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			file := args[0]
			if name == "" {
				name = defaultArtifactName(file)
				if !artifactName.MatchString(name) {
					return usagef("cannot derive a valid artifact name from %q; give one with --name (lower-case letters, digits, '.', '_', '-', '/')", file)
				}
			} else if !artifactName.MatchString(name) {
				return usagef("invalid --name %q: want lower-case letters, digits, '.', '_', '-' and '/', without a tag or digest", name)
			}
			f, err := os.Open(file)
			if err != nil {
				return fmt.Errorf("open artifact: %w", err)
			}
			defer f.Close()
			h := sha256.New()
			size, err := io.Copy(h, f)
			if err != nil {
				return fmt.Errorf("hash artifact: %w", err)
			}
			digest := hex.EncodeToString(h.Sum(nil))
			ctx := cmd.Context()
			var resp *artifactv1.PushArtifactResponse
			uctx, cancel := unary(ctx)
			got, err := a.artifacts().GetArtifact(uctx, connect.NewRequest(&artifactv1.GetArtifactRequest{Digest: digest}))
			cancel()
			switch {
			case err == nil:
				// Already stored: nothing to upload.
				resp = &artifactv1.PushArtifactResponse{Artifact: got.Msg.GetArtifact(), Revision: name + "@sha256:" + digest}
			case connect.CodeOf(err) == connect.CodeNotFound:
				if _, err := f.Seek(0, io.SeekStart); err != nil {
					return fmt.Errorf("read artifact: %w", err)
				}
				resp, err = a.push(cmd, f, &artifactv1.PushHeader{Name: name, Digest: digest, Size: uint64(size), PushedBy: a.actor})
				if err != nil {
					return err
				}
			default:
				return err
			}
			return a.emit(cmd.OutOrStdout(), resp, func(w io.Writer) error {
				art := resp.GetArtifact()
				what := "pushed"
				if !resp.GetCreated() {
					what = "already stored"
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "%s: %s, %d bytes, %s\n", what, formatName(art.GetFormat()), art.GetSize(), orDash(art.GetEntrypoint()))
				_, err := fmt.Fprintln(w, resp.GetRevision())
				return err
			})
		},
	}
	c.Flags().StringVar(&name, "name", "", "artifact name (default: the file name without .tar.gz/.tgz/.gz)")
	return c
}

// push streams the header and then f in chunks. When the server answers
// early (it refused the push) Send reports io.EOF and CloseAndReceive
// returns the server's error.
func (a *app) push(cmd *cobra.Command, f io.Reader, hdr *artifactv1.PushHeader) (*artifactv1.PushArtifactResponse, error) {
	stream := a.artifacts().PushArtifact(cmd.Context())
	err := stream.Send(&artifactv1.PushArtifactRequest{Content: &artifactv1.PushArtifactRequest_Header{Header: hdr}})
	buf := make([]byte, pushChunk)
	for err == nil {
		n, rerr := io.ReadFull(f, buf)
		if n > 0 {
			chunk := append([]byte(nil), buf[:n]...)
			err = stream.Send(&artifactv1.PushArtifactRequest{Content: &artifactv1.PushArtifactRequest_Chunk{Chunk: chunk}})
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			break
		}
		if rerr != nil {
			return nil, fmt.Errorf("read artifact: %w", rerr)
		}
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	resp, err := stream.CloseAndReceive()
	if err != nil {
		return nil, err
	}
	return resp.Msg, nil
}

func (a *app) artifactListCommand() *cobra.Command {
	var name string
	c := &cobra.Command{
		Use:     "list",
		Short:   "List artifacts by name, newest first",
		Example: "  sluice artifact list\n  sluice artifact list --name shop/cart -o json",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := unary(cmd.Context())
			defer cancel()
			resp, err := a.artifacts().ListArtifacts(ctx, connect.NewRequest(&artifactv1.ListArtifactsRequest{Name: name}))
			if err != nil {
				return err
			}
			return a.emit(cmd.OutOrStdout(), resp.Msg, func(w io.Writer) error {
				tw := newKV(w)
				fmt.Fprintln(tw, "REVISION\tFORMAT\tSIZE\tENTRYPOINT\tPUSHED\tBY")
				for _, art := range resp.Msg.GetArtifacts() {
					fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", shortRev(art.GetRevision()), formatName(art.GetFormat()), art.GetSize(),
						orDash(art.GetEntrypoint()), a.timeText(art.GetPushedAt()), orDash(art.GetPushedBy()))
				}
				return tw.Flush()
			})
		},
	}
	c.Flags().StringVar(&name, "name", "", "only artifacts pushed under this name")
	return c
}

func (a *app) artifactGetCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "get DIGEST",
		Short:   "Show one artifact (DIGEST: <64 hex>, sha256:<64 hex> or a revision)",
		Example: "  sluice artifact get shop/cart@sha256:0f3c…",
		Args:    exactArgs("DIGEST"),
		RunE: func(cmd *cobra.Command, args []string) error {
			digest := args[0]
			if _, d, ok := strings.Cut(digest, "sha256:"); ok {
				digest = d
			}
			ctx, cancel := unary(cmd.Context())
			defer cancel()
			resp, err := a.artifacts().GetArtifact(ctx, connect.NewRequest(&artifactv1.GetArtifactRequest{Digest: digest}))
			if err != nil {
				return err
			}
			art := resp.Msg.GetArtifact()
			return a.emit(cmd.OutOrStdout(), art, func(w io.Writer) error {
				tw := newKV(w)
				fmt.Fprintf(tw, "Revision:\t%s\n", art.GetRevision())
				fmt.Fprintf(tw, "Digest:\tsha256:%s\n", art.GetDigest())
				fmt.Fprintf(tw, "Format:\t%s\n", formatName(art.GetFormat()))
				fmt.Fprintf(tw, "Entrypoint:\t%s\n", orDash(art.GetEntrypoint()))
				fmt.Fprintf(tw, "Size:\t%d bytes\n", art.GetSize())
				fmt.Fprintf(tw, "Pushed:\t%s\n", a.timeText(art.GetPushedAt()))
				fmt.Fprintf(tw, "Pushed by:\t%s\n", orDash(art.GetPushedBy()))
				return tw.Flush()
			})
		},
	}
}

func formatName(f artifactv1.Format) string {
	switch f {
	case artifactv1.Format_FORMAT_EXECUTABLE:
		return "executable"
	case artifactv1.Format_FORMAT_TAR_GZIP:
		return "tar.gz"
	}
	return "unknown"
}
