"""SAM 3: text to instances with masks in one model; both the box stage and the mask stage."""
