# Sourced by setup_airflow_venv.sh and setup_kfp_venv.sh: an "overlay" venv that
# sees every package of the main venv (this project's editable install included)
# through a .pth hook and installs only its own extras. The main venv is never
# written. A stamp file holds a digest of what the venv was built from, so
# re-running is cheap when nothing changed.

# overlay_venv_digest < INPUTS: the digest of what a venv is built from (read on
# stdin), this helper included, so a change here rebuilds every overlay venv.
overlay_venv_digest() {
  cat - "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1
}

# overlay_venv_is_current VENV DIGEST: true when VENV was built from DIGEST.
overlay_venv_is_current() {
  [ -f "$1/.installed" ] && [ "$(cat "$1/.installed")" = "$2" ]
}

# overlay_venv_create MAIN_VENV VENV WHAT: a fresh VENV on MAIN_VENV's
# interpreter, with MAIN_VENV's site-packages visible; WHAT is for the log.
overlay_venv_create() {
  local main_venv="$1" venv="$2" what="$3" main_site base_py site
  if ! "$main_venv/bin/python" -c 'import tfx' >/dev/null 2>&1; then
    echo "error: $main_venv has no tfx; create it first (make venv)" >&2
    return 1
  fi
  echo "Creating $venv ($what)"
  main_site="$("$main_venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  base_py="$("$main_venv/bin/python" -c 'import sys; print(sys._base_executable)')"
  rm -rf "$venv"
  "$base_py" -m venv "$venv"
  site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  # addsitedir (unlike a bare path line) also runs the main venv's own .pth
  # files, which is how the editable install of this project is found.
  echo "import site; site.addsitedir('$main_site')" > "$site/zz_main_venv.pth"
}

# overlay_venv_done VENV DIGEST: marks VENV as built from DIGEST.
overlay_venv_done() {
  echo "$2" > "$1/.installed"
}
