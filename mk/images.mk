# Runtime and router images built with no registry pull and no network inside the builds (owner: images).
# IMAGES_VARIANT=full (pandas, scikit-learn, lightgbm) or minimal (server only; CI and tests use it).
# IMAGES_BASE_IMAGE empty = the local debootstrap base (images/base/build-base.sh); any other ref must
# already be in the local engine. Archives for `ctr -n k8s.io images import` go to IMAGES_ARCHIVE_DIR.
.PHONY: images images-save images-base images-prune docker-engine docker-engine-stop

IMAGES_VARIANT ?= full
IMAGES_BASE_IMAGE ?=
IMAGES_ARCHIVE_DIR ?= $(CACHE_DIR)/image-archives
IMAGES_BUILD = PY=$(PY) images/base/build-images.sh --variant $(IMAGES_VARIANT) \
	$(if $(IMAGES_BASE_IMAGE),--base-image $(IMAGES_BASE_IMAGE))

images: venv ## build runtime + router images offline; last two lines: runtime=<ref> router=<ref>
	@$(IMAGES_BUILD)

images-save: venv ## build the images and write docker-archive tarballs to $(IMAGES_ARCHIVE_DIR) (*_archive= lines)
	@$(IMAGES_BUILD) --save $(IMAGES_ARCHIVE_DIR)

images-base: ## make the local debootstrap base image (cached rootfs under $(CACHE_DIR)/base); prints BASE_IMAGE=<ref>
	@e2e/docker-engine.sh start >/dev/null && images/base/build-base.sh

docker-engine: ## start Debian's dockerd (installing docker.io if absent) unless an engine already answers
	@e2e/docker-engine.sh start

docker-engine-stop: ## stop the dockerd/containerd that e2e/docker-engine.sh started (nothing else)
	@e2e/docker-engine.sh stop

images-prune: ## remove all but the 3 newest agent-sandbox/runtime and router tags (KEEP=n to change)
	@images/base/prune-images.sh $(or $(KEEP),3)
