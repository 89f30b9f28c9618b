"""Gen3D's WorldScore adapter (copy into worldscore/benchmark/helpers/adapters/threedgen/).

WorldScore's helper calls ``adapter_<model>(config, data, helper)``.  Gen3D takes the cameras as
WorldScore saves them (camera-to-world, Blender axes, f = 500 px at 512 x 512): the engine's
engine.worldscore.engine_cameras converts them, so nothing is transformed here.
"""

from worldscore.benchmark.utils.utils import center_crop


def adapter_gen3d(config, data, helper):
    helper.prepare_data(data["output_dir"], data)  # image_data.json
    image_path = center_crop(data["image_path"], config["resolution"], data["output_dir"])  # input_image.png
    cameras = [camera.tolist() for camera in data["cameras"]]
    cameras_interp = [camera.tolist() for camera in data["cameras_interp"]]
    return image_path, data["inpainting_prompt_list"], cameras, cameras_interp
