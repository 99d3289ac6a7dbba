package portal

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"html/template"
	"image"
	"image/color"
	"image/png"

	"github.com/boombuler/barcode/qr"
)

// qrQuietZone is the white border, in modules, that QR readers need around the code (the
// standard asks for four).
const qrQuietZone = 4

// qrTargetSize is roughly the PNG's width in pixels; modules are scaled by a whole number so
// their edges stay sharp for a camera.
const qrTargetSize = 300

// qrDataURI draws text as a QR code (error correction M) and returns it as an inline PNG,
// data:image/png;base64,..., so the image is part of the page and cannot be fetched again, and
// its size in pixels: the page shows it at exactly that size so every module stays sharp.
func qrDataURI(text string) (template.URL, int, error) {
	code, err := qr.Encode(text, qr.M, qr.Auto)
	if err != nil {
		return "", 0, fmt.Errorf("QR code of %d bytes: %w", len(text), err)
	}
	n := code.Bounds().Dx()
	side := n + 2*qrQuietZone
	scale := max(1, qrTargetSize/side)
	img := image.NewPaletted(image.Rect(0, 0, side*scale, side*scale),
		color.Palette{color.Gray{Y: 0xff}, color.Gray{Y: 0}})
	// Index 0 (white) is the zero value, so only dark modules are drawn.
	origin := code.Bounds().Min
	for y := range n {
		for x := range n {
			if c := color.GrayModel.Convert(code.At(origin.X+x, origin.Y+y)).(color.Gray); c.Y >= 0x80 {
				continue
			}
			x0, y0 := (x+qrQuietZone)*scale, (y+qrQuietZone)*scale
			for dy := range scale {
				row := img.Pix[(y0+dy)*img.Stride+x0:]
				for dx := range scale {
					row[dx] = 1
				}
			}
		}
	}
	var buf bytes.Buffer
	enc := png.Encoder{CompressionLevel: png.BestCompression}
	if err := enc.Encode(&buf, img); err != nil {
		return "", 0, fmt.Errorf("PNG: %w", err)
	}
	// template.URL: html/template would otherwise replace a data: URL with "#ZgotmplZ". The
	// content is entirely ours (base64 of our own PNG).
	uri := template.URL("data:image/png;base64," + base64.StdEncoding.EncodeToString(buf.Bytes()))
	return uri, side * scale, nil
}
