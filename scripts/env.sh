# Shared settings for the project's scripts (sourced, not run).
: "${AUTOSAFE_HOME:=${XDG_CACHE_HOME:-$HOME/.cache}/autosafe}"
export AUTOSAFE_HOME
export AUTOSAFE_MODEL_DIR="$AUTOSAFE_HOME/models"
export AUTOSAFE_VENV_DIR="$AUTOSAFE_HOME/venv"
