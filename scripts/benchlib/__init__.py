"""The side-by-side benchmark behind `scripts/bench`: eotdlfs next to curl, nginx, rclone and download-all."""
