# cloudbase-init local script (put it in
# C:\Program Files\Cloudbase Solutions\Cloudbase-Init\LocalScripts\):
# applies the NVIDIA vGPU licensing that vgpu-nova-ext put on the config
# drive. cloudbase-init does not write a config drive's files itself.
$ErrorActionPreference = "Stop"
$drive = Get-Volume | Where-Object { $_.FileSystemLabel -eq "config-2" } |
    Select-Object -First 1
if (-not $drive) { exit 0 }
$root = "$($drive.DriveLetter):\openstack"
$meta = Get-Content "$root\latest\meta_data.json" -Raw | ConvertFrom-Json
$work = Join-Path $env:TEMP "vgpu-nova-ext"
New-Item -ItemType Directory -Path $work -Force | Out-Null
foreach ($file in $meta.files) {
    if ($file.path -like "/vgpu-nova-ext/windows/*") {
        $name = Split-Path $file.path -Leaf
        Copy-Item -Path (Join-Path $root ($file.content_path -replace "/", "\")) `
                  -Destination (Join-Path $work $name) -Force
    }
}
$script = Join-Path $work "apply-licensing.ps1"
if (Test-Path $script) { & $script }
Remove-Item -Recurse -Force $work
