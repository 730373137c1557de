// SVG charts written by hand: a line chart (metric per iteration, one line per
// run) and a radar chart (scores per category, one polygon per iterate).
// Standalone documents (xmlns, width/height, a white background), so a
// browser opens them directly and Markdown viewers embed them.
//
// Every series is an element with class="series" and its name in
// data-name, every data point a <circle class="point"> with a <title>
// tooltip, so tools (and the tests) can find them.
#define _GNU_SOURCE
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "report/report.h"
#include "util/common.h"

// Text content and attribute values: the five XML escapes; control
// characters (not allowed in XML 1.0) become spaces.
static void sb_xml(as_sbuf *b, const char *s) {
    for (; *s; s++) {
        switch (*s) {
        case '&': as_sb_printf(b, "&amp;"); break;
        case '<': as_sb_printf(b, "&lt;"); break;
        case '>': as_sb_printf(b, "&gt;"); break;
        case '"': as_sb_printf(b, "&quot;"); break;
        case '\'': as_sb_printf(b, "&apos;"); break;
        default: as_sb_printf(b, "%c", (unsigned char)*s < 0x20 ? ' ' : *s);
        }
    }
}

// Tableau's ten colours (matplotlib's default cycle).
static const char *const PALETTE[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                      "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
static const char *colour(int i) { return PALETTE[i % (int)AS_ARRAY_LEN(PALETTE)]; }

static void header(as_sbuf *b, int w, int h, const char *title) {
    as_sb_printf(b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    as_sb_printf(b, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
                 "font-family=\"Helvetica, Arial, sans-serif\" font-size=\"12\">\n", w, h, w, h);
    as_sb_printf(b, "<title>");
    sb_xml(b, title);
    as_sb_printf(b, "</title>\n<rect x=\"0\" y=\"0\" width=\"%d\" height=\"%d\" fill=\"white\"/>\n", w, h);
    as_sb_printf(b, "<text x=\"%d\" y=\"22\" text-anchor=\"middle\" font-size=\"15\" font-weight=\"bold\">", w / 2);
    sb_xml(b, title);
    as_sb_printf(b, "</text>\n");
}

static void legend(as_sbuf *b, int x, int y, int n, const char *const *names, bool area) {
    as_sb_printf(b, "<g class=\"legend\">\n");
    for (int i = 0; i < n; i++) {
        const int yy = y + 18 * i;
        if (area)
            as_sb_printf(b, "<rect x=\"%d\" y=\"%d\" width=\"14\" height=\"10\" fill=\"%s\" fill-opacity=\"0.3\" stroke=\"%s\"/>", x,
                      yy - 9, colour(i), colour(i));
        else as_sb_printf(b, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"%s\" stroke-width=\"2\"/>", x, yy - 4, x + 18, yy - 4, colour(i));
        as_sb_printf(b, "<text x=\"%d\" y=\"%d\">", x + 24, yy);
        sb_xml(b, names[i]);
        as_sb_printf(b, "</text>\n");
    }
    as_sb_printf(b, "</g>\n");
}

// A "nice" tick step (1, 2 or 5 times a power of ten) for about `n` ticks.
static double nice_step(double range, int n) {
    const double raw = range / n;
    const double p = pow(10.0, floor(log10(raw)));
    const double f = raw / p;
    return (f < 1.5 ? 1.0 : f < 3.5 ? 2.0 : f < 7.5 ? 5.0 : 10.0) * p;
}

static void fmt_tick(char *buf, size_t cap, double v, double step) {
    if (fabs(v) < step * 1e-6) v = 0.0;
    const int dec = step >= 1.0 ? 0 : (int)ceil(-log10(step) - 1e-9);
    snprintf(buf, cap, "%.*f", dec < 0 ? 0 : dec > 8 ? 8 : dec, v);
}

char *report_svg_line(const char *title, const char *x_label, const char *y_label, int n_series, const char *const *names,
                      const int *n, const double *const *x, const double *const *y) {
    const int W = 640, H = 400, L = 78, R = 190, T = 40, B = 52;
    const int pw = W - L - R, ph = H - T - B;
    // Data ranges.
    double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
    for (int s = 0; s < n_series; s++)
        for (int k = 0; k < n[s]; k++) {
            if (isnan(y[s][k]) || isinf(y[s][k])) continue;
            x0 = fmin(x0, x[s][k]), x1 = fmax(x1, x[s][k]);
            y0 = fmin(y0, y[s][k]), y1 = fmax(y1, y[s][k]);
        }
    if (!(x0 <= x1)) x0 = 0, x1 = 1, y0 = 0, y1 = 1; // no data at all
    if (x1 - x0 < 1.0) x0 -= 0.5, x1 += 0.5;
    if (y1 - y0 < 1e-12 * fmax(1.0, fabs(y0))) {
        const double pad = fabs(y0) > 0 ? 0.1 * fabs(y0) : 1.0;
        y0 -= pad, y1 += pad;
    }
    const double ys = nice_step(y1 - y0, 5);
    const double ylo = floor(y0 / ys) * ys, yhi = ceil(y1 / ys) * ys;
    const double xs = fmax(1.0, nice_step(x1 - x0, 8));
    const double xlo = floor(x0 / xs) * xs, xhi = ceil(x1 / xs) * xs;
#define PX(v) (L + ((v) - xlo) / (xhi - xlo) * pw)
#define PY(v) (T + ph - ((v) - ylo) / (yhi - ylo) * ph)
    as_sbuf b = {0};
    header(&b, W, H, title);
    // Grid, ticks and labels.
    as_sb_printf(&b, "<g class=\"axes\" stroke-width=\"1\">\n");
    char tick[64];
    for (double v = ylo; v <= yhi + ys * 0.5; v += ys) {
        as_sb_printf(&b, "<line x1=\"%d\" y1=\"%.2f\" x2=\"%d\" y2=\"%.2f\" stroke=\"#dddddd\"/>", L, PY(v), L + pw, PY(v));
        fmt_tick(tick, sizeof tick, v, ys);
        as_sb_printf(&b, "<text x=\"%d\" y=\"%.2f\" text-anchor=\"end\">%s</text>\n", L - 6, PY(v) + 4, tick);
    }
    for (double v = xlo; v <= xhi + xs * 0.5; v += xs) {
        as_sb_printf(&b, "<line x1=\"%.2f\" y1=\"%d\" x2=\"%.2f\" y2=\"%d\" stroke=\"#888888\"/>", PX(v), T + ph, PX(v), T + ph + 5);
        fmt_tick(tick, sizeof tick, v, xs);
        as_sb_printf(&b, "<text x=\"%.2f\" y=\"%d\" text-anchor=\"middle\">%s</text>\n", PX(v), T + ph + 19, tick);
    }
    as_sb_printf(&b, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"black\"/>", L, T, L, T + ph);
    as_sb_printf(&b, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"black\"/>\n", L, T + ph, L + pw, T + ph);
    as_sb_printf(&b, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">", L + pw / 2, H - 12);
    sb_xml(&b, x_label);
    as_sb_printf(&b, "</text>\n<text x=\"16\" y=\"%d\" text-anchor=\"middle\" transform=\"rotate(-90 16 %d)\">", T + ph / 2, T + ph / 2);
    sb_xml(&b, y_label);
    as_sb_printf(&b, "</text>\n</g>\n");
    // Series.
    for (int s = 0; s < n_series; s++) {
        as_sb_printf(&b, "<g class=\"run\">\n<polyline class=\"series\" data-name=\"");
        sb_xml(&b, names[s]);
        as_sb_printf(&b, "\" fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", colour(s));
        bool first = true;
        for (int k = 0; k < n[s]; k++) {
            if (isnan(y[s][k]) || isinf(y[s][k])) continue;
            as_sb_printf(&b, "%s%.2f,%.2f", first ? "" : " ", PX(x[s][k]), PY(y[s][k]));
            first = false;
        }
        as_sb_printf(&b, "\"/>\n");
        for (int k = 0; k < n[s]; k++) {
            if (isnan(y[s][k]) || isinf(y[s][k])) continue;
            as_sb_printf(&b, "<circle class=\"point\" cx=\"%.2f\" cy=\"%.2f\" r=\"3.5\" fill=\"%s\"><title>", PX(x[s][k]), PY(y[s][k]), colour(s));
            sb_xml(&b, names[s]);
            as_sb_printf(&b, ", iteration %g: %.6g</title></circle>\n", x[s][k], y[s][k]);
        }
        as_sb_printf(&b, "</g>\n");
    }
#undef PX
#undef PY
    legend(&b, L + pw + 18, T + 12, n_series, names, false);
    as_sb_printf(&b, "</svg>\n");
    return b.s;
}

char *report_svg_radar(const char *title, int n_axes, const char *const *axes, int n_series, const char *const *names,
                       const double *values, double max) {
    const int W = 640, H = 480, R = 160, CX = 250, CY = 260;
    if (!(max > 0)) max = 1.0;
    as_sbuf b = {0};
    header(&b, W, H, title);
    // Axis k points up at k = 0 and turns clockwise.
#define AX(k, f) (CX + (f) * R * sin(2.0 * M_PI * (k) / n_axes))
#define AY(k, f) (CY - (f) * R * cos(2.0 * M_PI * (k) / n_axes))
    as_sb_printf(&b, "<g class=\"axes\" fill=\"none\" stroke=\"#cccccc\">\n");
    for (int ring = 1; ring <= 5; ring++) {
        const double f = ring / 5.0;
        as_sb_printf(&b, "<polygon points=\"");
        for (int k = 0; k < n_axes; k++) as_sb_printf(&b, "%s%.2f,%.2f", k ? " " : "", AX(k, f), AY(k, f));
        as_sb_printf(&b, "\"/>\n");
    }
    for (int k = 0; k < n_axes; k++) as_sb_printf(&b, "<line x1=\"%d\" y1=\"%d\" x2=\"%.2f\" y2=\"%.2f\"/>\n", CX, CY, AX(k, 1.0), AY(k, 1.0));
    as_sb_printf(&b, "</g>\n<g class=\"labels\">\n");
    char tick[64];
    for (int ring = 1; ring <= 5; ring++) {
        fmt_tick(tick, sizeof tick, max * ring / 5.0, max / 5.0);
        as_sb_printf(&b, "<text x=\"%d\" y=\"%.2f\" font-size=\"10\" fill=\"#888888\">%s</text>\n", CX + 3, CY - R * ring / 5.0 - 2, tick);
    }
    for (int k = 0; k < n_axes; k++) {
        const double sx = sin(2.0 * M_PI * k / n_axes);
        const char *anchor = sx > 0.2 ? "start" : sx < -0.2 ? "end" : "middle";
        as_sb_printf(&b, "<text class=\"axis\" x=\"%.2f\" y=\"%.2f\" text-anchor=\"%s\">", AX(k, 1.12), AY(k, 1.12) + 4, anchor);
        sb_xml(&b, axes[k]);
        as_sb_printf(&b, "</text>\n");
    }
    as_sb_printf(&b, "</g>\n");
    for (int s = 0; s < n_series; s++) {
        as_sb_printf(&b, "<g class=\"run\">\n<polygon class=\"series\" data-name=\"");
        sb_xml(&b, names[s]);
        as_sb_printf(&b, "\" fill=\"%s\" fill-opacity=\"0.12\" stroke=\"%s\" stroke-width=\"2\" points=\"", colour(s), colour(s));
        for (int k = 0; k < n_axes; k++) {
            const double v = values[(size_t)s * n_axes + k];
            const double f = isnan(v) ? 0.0 : fmin(fmax(v / max, 0.0), 1.0);
            as_sb_printf(&b, "%s%.2f,%.2f", k ? " " : "", AX(k, f), AY(k, f));
        }
        as_sb_printf(&b, "\"/>\n");
        for (int k = 0; k < n_axes; k++) {
            const double v = values[(size_t)s * n_axes + k];
            const double f = isnan(v) ? 0.0 : fmin(fmax(v / max, 0.0), 1.0);
            as_sb_printf(&b, "<circle class=\"point\" cx=\"%.2f\" cy=\"%.2f\" r=\"3\" fill=\"%s\"><title>", AX(k, f), AY(k, f), colour(s));
            sb_xml(&b, names[s]);
            as_sb_printf(&b, ", ");
            sb_xml(&b, axes[k]);
            if (isnan(v)) as_sb_printf(&b, ": missing</title></circle>\n");
            else as_sb_printf(&b, ": %.6g</title></circle>\n", v);
        }
        as_sb_printf(&b, "</g>\n");
    }
#undef AX
#undef AY
    legend(&b, CX + R + 90, 60, n_series, names, true);
    as_sb_printf(&b, "</svg>\n");
    return b.s;
}
