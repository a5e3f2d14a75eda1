#!/usr/bin/env bash
# Install what the dashboard browser test and the SoundFont audio need, when missing:
# chromium + chromium-driver (tests/test_dashboards_browser.py), fluid-soundfont-gm
# (/usr/share/sounds/sf2/FluidR3_GM.sf2 for piano_gpt.audio) and fluidsynth (the program that renders
# it where symusic's synthesizer cannot). Idempotent; never fails the build:
# without apt (or root) it says so and exits 0, and the browser test then skips with a reason.
set -u

missing=()
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || [ -x /usr/lib/chromium/chromedriver ] || missing+=(chromium-driver)
[ -f /usr/share/sounds/sf2/FluidR3_GM.sf2 ] || missing+=(fluid-soundfont-gm)
command -v fluidsynth >/dev/null 2>&1 || missing+=(fluidsynth)

if [ ${#missing[@]} -eq 0 ]; then
    echo "browser.sh: chromium, chromedriver, the GM SoundFont and fluidsynth are already installed"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "browser.sh: apt-get not available; not installing ${missing[*]} (the browser test will be skipped)"
    exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo="sudo -n"
    else
        echo "browser.sh: not root and no sudo; not installing ${missing[*]} (the browser test will be skipped)"
        exit 0
    fi
fi
echo "browser.sh: installing ${missing[*]}"
if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"; } >/tmp/piano-gpt-browser-apt.log 2>&1; then
    echo "browser.sh: apt-get install failed (log: /tmp/piano-gpt-browser-apt.log); the browser test will be skipped"
    tail -5 /tmp/piano-gpt-browser-apt.log
fi
exit 0
