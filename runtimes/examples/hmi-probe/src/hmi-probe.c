/* An HMI client compiled in org.appmgr.Hmi.Sdk (sandboxed, by appmgr) and run on
 * org.appmgr.Hmi: it compiles a keymap from the runtime's xkb data, finds the runtime's
 * font through fontconfig and opens it with freetype, initialises PipeWire's client
 * library, resolves EGL through glvnd's dispatch library and tries the compositor.
 * One line on stdout says what worked; exit 1 if any of the first four failed. */
#include <EGL/egl.h>
#include <fontconfig/fontconfig.h>
#include <ft2build.h>
#include FT_FREETYPE_H
#include <pipewire/pipewire.h>
#include <stdio.h>
#include <wayland-client.h>
#include <xkbcommon/xkbcommon.h>

int main(void) {
    struct xkb_context *ctx = xkb_context_new(XKB_CONTEXT_NO_FLAGS);
    struct xkb_rule_names names = {.rules = "evdev", .model = "pc105", .layout = "us"};
    struct xkb_keymap *km = ctx ? xkb_keymap_new_from_names(ctx, &names, 0) : NULL;

    FcPattern *pat = FcNameParse((const FcChar8 *)"sans-serif");
    FcConfigSubstitute(NULL, pat, FcMatchPattern);
    FcDefaultSubstitute(pat);
    FcResult res;
    FcPattern *match = FcFontMatch(NULL, pat, &res);
    FcChar8 *file = NULL;
    if (match) FcPatternGetString(match, FC_FILE, 0, &file);
    FT_Library ft;
    FT_Face face = NULL;
    int ft_ok = FT_Init_FreeType(&ft) == 0 && file && FT_New_Face(ft, (const char *)file, 0, &face) == 0;

    pw_init(NULL, NULL);
    struct wl_display *d = wl_display_connect(NULL);
    int egl = eglGetProcAddress("eglGetDisplay") != NULL;

    printf("keymap=%s font=%s family=%s pipewire=%s egl=%s wayland=%s\n",
           km ? "ok" : "FAILED", file ? (const char *)file : "NONE",
           ft_ok ? face->family_name : "FAILED", pw_get_library_version(),
           egl ? "ok" : "FAILED", d ? "connected" : "none");
    return km && ft_ok && egl ? 0 : 1;
}
