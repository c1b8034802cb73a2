package bench

import (
	"fmt"
	"image/color"
	"os"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// colors of the enforcers in the plot, in the order of Enforcers.
var colors = []color.Color{
	color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
	color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
	color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
}

// WritePlot draws every enforcer's median relative to no filter against the number of rules
// (log scale), every packet judged: one panel per test (columns) and figure (rows: the rate,
// the rate per CPU), and writes it as a PNG.
func (r *Report) WritePlot(path string) error {
	tests := []struct {
		t     Test
		title string
	}{
		{TCPStream, "TCP stream"},
		{UDPSmall, "UDP, 64-byte payloads"},
	}
	var plots [][]*plot.Plot
	for _, perCPU := range []bool{false, true} {
		var row []*plot.Plot
		for _, t := range tests {
			title := t.title + ": rate, every packet judged"
			if perCPU {
				title = t.title + ": rate per CPU, every packet judged"
			}
			p, err := r.plotTest(t.t, perCPU, title)
			if err != nil {
				return err
			}
			row = append(row, p)
		}
		plots = append(plots, row)
	}
	const w, h = 11 * vg.Inch, 8 * vg.Inch
	img := vgimg.New(w, h)
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: len(plots), Cols: len(plots[0]), PadX: vg.Millimeter * 6, PadY: vg.Millimeter * 6,
		PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 4}
	canvases := plot.Align(plots, tiles, dc)
	for i, row := range plots {
		for j, p := range row {
			p.Draw(canvases[i][j])
		}
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("create plot: %w", err)
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("write plot: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write plot: %w", err)
	}
	return nil
}

func (r *Report) plotTest(t Test, perCPU bool, title string) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "rules in the pod's policy"
	p.Y.Label.Text = "relative to no filter"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	p.X.Min = float64(r.RuleCounts[0]) * 0.8
	p.X.Max = float64(r.RuleCounts[len(r.RuleCounts)-1]) * 1.25
	p.Y.Min, p.Y.Max = 0, 1.1
	p.Legend.Top = false
	p.Legend.Left = true
	p.Add(plotter.NewGrid())

	base := plotter.NewFunction(func(float64) float64 { return 1 })
	base.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
	base.Color = color.Gray{Y: 0x60}
	p.Add(base)
	p.Legend.Add(NoFilter, base)

	for i, e := range Enforcers {
		var xys plotter.XYs
		for _, n := range r.RuleCounts {
			if ratio := r.Ratio(Key{Enforcer: e, Rules: n, Test: t, PerCPU: perCPU}); ratio > 0 {
				xys = append(xys, plotter.XY{X: float64(n), Y: ratio})
				p.Y.Max = max(p.Y.Max, ratio*1.05)
			}
		}
		line, points, err := plotter.NewLinePoints(xys)
		if err != nil {
			return nil, fmt.Errorf("plot %s: %w", e, err)
		}
		line.Color, points.Color = colors[i], colors[i]
		line.Width = vg.Points(2)
		points.Shape = draw.CircleGlyph{}
		p.Add(line, points)
		p.Legend.Add(e, line, points)
	}
	return p, nil
}
